"""Test seams: a scripted OpenAI-compatible server on loopback, answering per model name.

```python
with ScriptedServer({"slm": [Reply(text="refund")], "llm": [Reply(text="other")]}) as server:
    endpoints = server.endpoints(slm_model="slm", llm_model="llm")
```

It speaks real HTTP, so the whole client path (timeouts, retries, error mapping) runs. It refuses
(400) a request carrying a field vLLM does not know: vLLM itself would ignore it and decode
unconstrained, which is how a stale `guided_choice` slips through unnoticed.

Faults, for the chaos suite: `Reply(status=503)` (a 5xx), `Reply(delay=...)` longer than the
client's timeout (a hang), `Reply(body=b'{"choices": [')` (a truncated or garbage body, sent as is
with the reply's status) and `Reply(close=True)` (the connection dropped with no answer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slmflow.answers import Tier
from slmflow.models import Dialect, Endpoint, Endpoints, ModelClient

__all__ = ["Reply", "ScriptedServer"]

# Top-level chat-completion fields vLLM accepts (OpenAI's, plus its own extras we use).
KNOWN_FIELDS = frozenset({
    "model", "messages", "temperature", "max_tokens", "max_completion_tokens", "logprobs",
    "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "stream",
    "stop", "seed", "n", "top_p", "user", "structured_outputs", "priority", "stream_options",
})  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `tool_calls` are (name, arguments) with arguments a dict or raw text."""

    text: str | None = None
    tool_calls: Sequence[tuple[str, dict[str, Any] | str]] = ()
    logprobs: Sequence[float] | None = None
    """Token logprobs; default: one confident token (-0.01) per word of the answer."""
    status: int = 200
    delay: float = 0.0
    finish_reason: str | None = None
    prompt_tokens: int = 20
    completion_tokens: int = 5
    body: bytes | None = None
    """Raw response body sent as is (with `status`), instead of a completion: truncated JSON, garbage."""
    close: bool = False
    """Drop the connection after the delay without sending anything."""
    runner_up: Sequence[float | None] = ()
    """Per token, the logprob of the best alternative (sent as `top_logprobs` when asked for)."""
    choices: Sequence[Reply] = ()
    """The choices of a sampling request (`n` > 1); default: this reply `n` times."""


Script = Sequence[Reply] | Callable[[dict[str, Any]], Reply]


@dataclass
class ScriptedServer:
    """An OpenAI-compatible server that answers each model from its script (the last reply repeats)."""

    scripts: dict[str, Script]
    aliases: dict[str, str] = field(default_factory=dict)
    """Served model name to the model whose script answers it (e.g. an adapter answered as `slm`)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    loaded: dict[str, str] = field(default_factory=dict)
    """Adapters loaded at runtime (`POST /v1/load_lora_adapter`): name to path; served, never scripted."""
    port: int = 0
    """The loopback port to listen on (0: a free one)."""
    keep_requests: bool = True
    """Keep every request body in `requests` (off for a server that runs for hours)."""
    _served: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """The `/v1` URL clients should use."""
        assert self._httpd is not None, "start the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on loopback (`port`, or a free one) in a background thread."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def serve_forever(self) -> None:
        """Listen on loopback (`port`, or a free one) in this thread until interrupted."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.daemon_threads = True
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop listening."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """The request bodies received for `model`, in order."""
        return [r for r in self.requests if r.get("model") == model]

    def endpoint(self, tier: Tier, model: str, dialect: Dialect = "vllm", timeout: float = 5.0) -> Endpoint:
        """An endpoint on this server; prices are 1 and 10 per 1k tokens for the SLM and LLM."""
        price = 1.0 if tier is Tier.SLM else 10.0
        return Endpoint(tier, self.base_url, model, dialect=dialect, timeout=timeout,
                        max_retries=1, price_per_1k_input=price, price_per_1k_output=price)  # fmt: skip

    def endpoints(self, slm_model: str, llm_model: str | None = None, timeout: float = 5.0) -> Endpoints:
        """SLM (and LLM) endpoints on this server, for `run_skill` and graphs."""
        slm = ModelClient(self.endpoint(Tier.SLM, slm_model, timeout=timeout))
        llm = ModelClient(self.endpoint(Tier.LLM, llm_model, "openai", timeout)) if llm_model else None
        return Endpoints(slm=slm, llm=llm, llm_price_per_1k=(10.0, 10.0),
                         _owned=[c for c in (slm, llm) if c])  # fmt: skip

    def next_reply(self, body: dict[str, Any]) -> Reply:
        """The reply the script gives to this request."""
        model = str(body.get("model"))
        model = self.aliases.get(model, model)
        with self._lock:
            if self.keep_requests:
                self.requests.append(body)
            script = self.scripts.get(model)
            if script is None:
                return Reply(status=404, text=f"The model `{model}` does not exist.")
            if callable(script):
                return script(body)
            index = self._served.get(model, 0)
            self._served[model] = index + 1
            return script[min(index, len(script) - 1)]


def _choice(index: int, reply: Reply) -> dict[str, Any]:
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        }
        for i, (name, args) in enumerate(reply.tool_calls)
    ]
    words = (reply.text or "").split() or [""] * max(len(calls), 1)
    logprobs = reply.logprobs if reply.logprobs is not None else [-0.01] * len(words)
    runner_up = list(reply.runner_up) + [None] * (len(logprobs) - len(reply.runner_up))
    content = [
        {"token": "t", "logprob": lp, "bytes": None,
         "top_logprobs": [{"token": "t", "logprob": lp, "bytes": None}]
         + ([{"token": "u", "logprob": ru, "bytes": None}] if ru is not None else [])}
        for lp, ru in zip(logprobs, runner_up, strict=False)
    ]  # fmt: skip
    return {
        "index": index,
        "message": {"role": "assistant", "content": reply.text, "tool_calls": calls or None},
        "logprobs": {"content": content},
        "finish_reason": reply.finish_reason or ("tool_calls" if calls else "stop"),
    }


def _completion_body(model: str, reply: Reply, n: int = 1) -> dict[str, Any]:
    replies = list(reply.choices) if reply.choices else [reply] * n
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(i, r) for i, r in enumerate(replies)],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens * len(replies),
            "total_tokens": reply.prompt_tokens + reply.completion_tokens * len(replies),
        },
    }


def _response(model: str, reply: Reply, n: int = 1) -> tuple[int, dict[str, Any] | bytes]:
    """The status and body a reply is sent as."""
    if reply.body is not None:
        return reply.status, reply.body
    if reply.status != 200:
        return reply.status, {"error": {"message": reply.text or "scripted error"}}
    return 200, _completion_body(model, reply, n)


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive, as vLLM's server does
        disable_nagle_algorithm = True  # else a body written after its headers waits ~40 ms for a delayed ACK

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: dict[str, Any] | bytes) -> None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model"} for m in [*server.scripts, *server.aliases, *server.loaded]]
                self._send(200, {"object": "list", "data": data})
            elif self.path.rstrip("/") == "/health":  # vLLM's liveness endpoint
                self._send(200, {})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/").endswith("/load_lora_adapter"):
                server.loaded[str(body.get("lora_name"))] = str(body.get("lora_path"))
                self._send(200, {"status": "ok"})
                return
            unknown = sorted(set(body) - KNOWN_FIELDS)
            if unknown:
                self._send(400, {"error": {"message": f"unknown request fields {unknown}"}})
                return
            reply = server.next_reply(body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.close:
                self.close_connection = True
                return
            try:
                self._send(*_response(str(body.get("model")), reply, int(body.get("n") or 1)))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (it timed out during the delay)

    return Handler
