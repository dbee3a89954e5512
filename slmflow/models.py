"""Model endpoints: one OpenAI-compatible client per tier, and the completions they return.

Foreign errors (openai, httpx) are mapped to slmflow's here and nowhere else (`map_openai_error`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from slmflow.answers import Tier
from slmflow.errors import (
    EndpointUnreachable,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    UsageError,
)
from slmflow.hooks import CascadeHooks
from slmflow.redaction import mask_url
from slmflow.settings import Settings

__all__ = [
    "Completion",
    "check_reachable",
    "Dialect",
    "Endpoint",
    "Endpoints",
    "ModelClient",
    "RawToolCall",
    "map_openai_error",
]


BACKGROUND_DRAIN_S = 30.0
"""How long closing the endpoints waits for background work (audits) before cancelling it."""

Dialect = Literal["vllm", "openai"]
"""How to ask for constrained output: vLLM's `structured_outputs`, or plain OpenAI fields only."""


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint of a tier, with its prices per 1k tokens."""

    tier: Tier
    base_url: str
    default_model: str
    api_key: str = "EMPTY"
    dialect: Dialect = "vllm"
    timeout: float = 60.0
    max_retries: int = 2
    price_per_1k_input: float = 0.0
    price_per_1k_output: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Estimated cost of a call with these token counts."""
        return (input_tokens * self.price_per_1k_input + output_tokens * self.price_per_1k_output) / 1000


@dataclass(frozen=True)
class RawToolCall:
    """A tool call as the model wrote it: the arguments are still an unparsed JSON string."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Completion:
    """One model answer with what the cascade needs to judge it."""

    model: str
    text: str | None
    tool_calls: tuple[RawToolCall, ...]
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    token_logprobs: tuple[float, ...]
    latency_s: float
    runner_up_logprobs: tuple[float | None, ...] = ()
    """Per token, the logprob of the best token not chosen (when `top_logprobs` was asked for)."""


def _is_transient(exc: BaseException) -> bool:
    # Timeouts are not retried: a second wait of the full timeout is worse than escalating.
    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def map_openai_error(exc: Exception, model: str, base_url: str) -> ModelError:
    """The slmflow error for an exception raised by the openai client."""
    base_url = mask_url(base_url)  # only ever shown: a password in it stays out of errors and logs
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"{model} at {base_url} did not answer in time", model=model)
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable(f"cannot connect to {base_url} (model {model}): is the server running?", model=model)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        error_type = ModelUnavailable if status >= 500 else ModelError
        return error_type(f"{model} at {base_url} answered {status}: {detail}", model=model, status_code=status)
    return ModelError(f"{model} at {base_url} failed: {exc!r}", model=model)


def _not_a_completion(model: str, base_url: str, exc: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"{model} at {mask_url(base_url)} answered something that is not a chat completion "
        f"({type(exc).__name__}): is it an OpenAI-compatible /v1 endpoint?",
        model=model,
    )


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error", {})
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return str(message)[:300]
    return exc.message[:300]


class ModelClient:
    """Async chat calls to one endpoint: temperature 0, logprobs, retries on transient errors."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            timeout=endpoint.timeout,
            max_retries=0,  # tenacity retries below, on connection errors and 5xx only
        )

    def with_default_model(self, model: str) -> ModelClient:
        """A client of the same endpoint and connections whose default model is `model`."""
        clone = ModelClient.__new__(ModelClient)
        clone.endpoint = replace(self.endpoint, default_model=model)
        clone._client = self._client
        return clone

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        max_tokens: int,
        request: dict[str, Any] | None = None,
    ) -> Completion:
        """One chat completion at temperature 0; `request` adds constraint fields (response_format, tools, ...)."""
        model = model or self.endpoint.default_model
        started = time.perf_counter()
        response = await self._create(messages, model, max_tokens, request, temperature=0)
        return self._completions(response, model, time.perf_counter() - started)[0]

    async def samples(
        self,
        messages: list[dict[str, Any]],
        *,
        n: int,
        temperature: float,
        seed: int,
        model: str | None = None,
        max_tokens: int,
        request: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """`n` sampled completions of one request (self-consistency); the latency is the request's."""
        model = model or self.endpoint.default_model
        started = time.perf_counter()
        response = await self._create(messages, model, max_tokens, request, temperature=temperature, n=n, seed=seed)
        return self._completions(response, model, time.perf_counter() - started)

    async def _create(
        self, messages: list[dict[str, Any]], model: str, max_tokens: int, request: dict[str, Any] | None,
        **sampling: Any,
    ) -> Any:  # fmt: skip
        body: dict[str, Any] = dict(request or {})
        extra_body = body.pop("extra_body", None) or {}
        payload = {"model": model, "messages": messages, "max_tokens": max_tokens, "logprobs": True, **sampling,
                   **body, **extra_body}  # fmt: skip
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient),
                stop=stop_after_attempt(self.endpoint.max_retries + 1),
                wait=wait_random_exponential(multiplier=0.2, max=5.0),
                reraise=True,
            ):
                with attempt:
                    # The body is plain JSON already: posted as it is, skipping the SDK's per-call
                    # transform of typed params (about 1.5 ms of CPU a call, most of a step's own cost).
                    return await self._client.post("/chat/completions", body=payload, cast_to=ChatCompletion)
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, model, self.endpoint.base_url) from exc
        except (ValueError, UnicodeError) as exc:  # a body that is not JSON (cut off, garbage)
            raise _not_a_completion(model, self.endpoint.base_url, exc) from exc
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _completions(self, response: Any, model: str, latency_s: float) -> list[Completion]:
        try:
            found = [_completion(response, choice, model, latency_s) for choice in response.choices]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:  # JSON, not a completion
            raise _not_a_completion(model, self.endpoint.base_url, exc) from exc
        if not found:
            raise _not_a_completion(model, self.endpoint.base_url, IndexError("no choices"))
        return found

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()


def _completion(response: Any, choice: Any, model: str, latency_s: float) -> Completion:
    message = choice.message
    calls = tuple(
        RawToolCall(name=c.function.name, arguments=c.function.arguments or "", id=c.id or "")
        for c in (message.tool_calls or [])
    )
    logprobs = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    usage = response.usage
    return Completion(
        model=model,
        text=message.content,
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        token_logprobs=tuple(float(t.logprob) for t in logprobs),
        latency_s=latency_s,
        runner_up_logprobs=tuple(_runner_up(t) for t in logprobs) if any(t.top_logprobs for t in logprobs) else (),
    )


def _runner_up(token: Any) -> float | None:
    """The best logprob among the alternatives to the chosen token (None: no alternative came back)."""
    others = [float(t.logprob) for t in (token.top_logprobs or []) if t.token != token.token]
    return max(others) if others else None


@dataclass
class Endpoints:
    """The clients a skill runs against: the SLM tier and, when configured, the LLM tier."""

    slm: ModelClient
    llm: ModelClient | None = None
    llm_price_per_1k: tuple[float, float] = (0.0025, 0.01)
    """LLM prices (input, output) used for the all-LLM cost estimate, even with no LLM set."""
    learning: CascadeHooks | None = None
    """Adapter routes, shadow and recording (the learning loop); None: base models, nothing kept.
    Never filled in from settings behind the caller's back: `open_endpoints(..., learning=True)`."""
    _owned: list[ModelClient] = field(default_factory=list, repr=False)
    _background: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the caller's path (an audit); `aclose` waits for it, within a bound."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout_s: float = BACKGROUND_DRAIN_S) -> None:
        """Wait for background work, cancelling what is still running after `timeout_s`."""
        if not self._background:
            return
        _, pending = await asyncio.wait(set(self._background), timeout=timeout_s)
        for task in pending:
            task.cancel()

    @classmethod
    def from_settings(cls, settings: Settings, slm_base_url: str | None = None) -> Endpoints:
        """The clients the settings describe (`slm_base_url` overrides the setting); no learning hooks."""
        slm = ModelClient(
            Endpoint(
                tier=Tier.SLM,
                base_url=slm_base_url or settings.slm_base_url or settings.local_base_url,
                default_model=settings.slm_model or settings.local_model,
                api_key=settings.slm_api_key.get_secret_value(),
                dialect="vllm",
                timeout=settings.request_timeout,
                max_retries=settings.max_retries,
                price_per_1k_input=settings.slm_price_per_1k_input,
                price_per_1k_output=settings.slm_price_per_1k_output,
            )
        )
        llm = None
        if settings.llm_base_url:
            llm = ModelClient(
                Endpoint(
                    tier=Tier.LLM,
                    base_url=settings.llm_base_url,
                    default_model=settings.llm_model or "default",
                    api_key=settings.llm_api_key.get_secret_value(),
                    dialect=settings.llm_dialect,
                    timeout=settings.request_timeout,
                    max_retries=settings.max_retries,
                    price_per_1k_input=settings.llm_price_per_1k_input,
                    price_per_1k_output=settings.llm_price_per_1k_output,
                )
            )
        return cls(
            slm=slm,
            llm=llm,
            llm_price_per_1k=(settings.llm_price_per_1k_input, settings.llm_price_per_1k_output),
            _owned=[c for c in (slm, llm) if c is not None],
        )

    async def aclose(self) -> None:
        """Finish background work (bounded), then close the clients these endpoints created."""
        await self.drain()
        for client in self._owned:
            await client.aclose()


async def check_reachable(client: ModelClient, models: list[str]) -> None:
    """Fail fast, before a job starts, when an endpoint is down or does not serve a model."""
    endpoint = client.endpoint
    try:
        served = [m.id async for m in client._client.models.list()]
    except openai.APIConnectionError:
        raise EndpointUnreachable(
            f"nothing answers at {mask_url(endpoint.base_url)} ({endpoint.tier} tier): start the server, "
            f"or fix SLMFLOW_{endpoint.tier.upper()}_BASE_URL"
        ) from None
    except openai.APIStatusError:
        return  # it answers; some OpenAI-compatible APIs do not list models
    missing = sorted(set(models) - set(served))
    if missing:
        raise UsageError(
            f"{mask_url(endpoint.base_url)} does not serve {', '.join(missing)} (it serves: "
            f"{', '.join(served) or 'nothing'}): load the adapter or fix the skill's model"
        )
