"""Tools: a registry of langchain-core tools and declared OpenAI function specs, and executors.

A tool's JSON Schema comes from its type hints and docstring (langchain-core `@tool`) or from a
declared spec, and is checked when the tool is registered, not at its first call. Arguments are
validated against it before anything runs. An executor runs a validated call; the in-process one
lives here, the Celery one in the fleet.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import jsonschema
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from slmflow import telemetry
from slmflow.errors import (
    InvalidToolArguments,
    SlmflowError,
    ToolError,
    ToolFailed,
    ToolTimeout,
    UnknownTool,
    UsageError,
)
from slmflow.events import Event, ToolCalled
from slmflow.redaction import excerpt

__all__ = [
    "InProcessExecutor",
    "ToolCall",
    "ToolContext",
    "ToolExecutor",
    "ToolRegistry",
    "ToolSpec",
    "declare_tool",
    "idempotent",
    "needs_approval",
]

IDEMPOTENT = "slmflow_idempotent"
"""Metadata flag on a langchain tool: running it twice with the same key has the effect of once."""
NEEDS_APPROVAL = "slmflow_needs_approval"
"""Metadata flag on a langchain tool: a model's call of it runs only once a human approves it."""

DEFAULT_TOOL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it (name, description, JSON Schema) and, if local, how to run it."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Any] | None = None
    """Runs the tool with validated arguments (may be async). None: the call is the answer."""
    timeout: float = DEFAULT_TOOL_TIMEOUT_S
    idempotent: bool = False
    """Running it again with the same `ToolContext.key` has the effect of running it once: an
    interrupted call is retried. Not idempotent (the default): an interrupted call is never re-run
    blindly; the job pauses for review with the reason `outcome_unknown`."""
    context_arg: str | None = None
    """The parameter that receives the call's `ToolContext` (hidden from the model's schema)."""
    needs_approval: bool = False
    """A model's checked call of it is proposed, not run: the job pauses `awaiting_approval` until a
    human approves (or edits, or rejects) it, then it runs once."""

    def __post_init__(self) -> None:
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise UsageError(f"tool {self.name!r} has an invalid JSON Schema: {exc.message}") from None

    def openai_tool(self) -> dict[str, Any]:
        """The OpenAI `tools` entry, `strict` so that the arguments are decoded against the schema."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
                "strict": True,
            },
        }

    def validate(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Parsed arguments, or `InvalidToolArguments` saying what is wrong."""
        if isinstance(arguments, str):
            text = arguments
            try:
                arguments = json.loads(text or "{}")
            except json.JSONDecodeError as exc:
                raise InvalidToolArguments(
                    f"arguments of {self.name} are not valid JSON ({exc.msg}): {excerpt(text, 200)!r}",
                    tool=self.name,
                ) from None
        if not isinstance(arguments, Mapping):
            raise InvalidToolArguments(
                f"arguments of {self.name} must be a JSON object, got {arguments!r}", tool=self.name
            )
        errors = sorted(
            jsonschema.Draft202012Validator(self.parameters).iter_errors(dict(arguments)),
            key=lambda e: list(e.path),
        )
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "arguments"
            raise InvalidToolArguments(f"{self.name}: {where}: {errors[0].message}", tool=self.name)
        return dict(arguments)


def _strict_object(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    schema.setdefault("type", "object")
    schema.setdefault("additionalProperties", False)
    return schema


def declare_tool(
    name: str,
    description: str,
    parameters: dict[str, Any],
    run: Callable[[dict[str, Any]], Any] | None = None,
    timeout: float = DEFAULT_TOOL_TIMEOUT_S,
    *,
    idempotent: bool = False,
    needs_approval: bool = False,
) -> ToolSpec:
    """A tool declared by its OpenAI function spec: it runs elsewhere, or the call is the answer."""
    return ToolSpec(name, description, _strict_object(parameters), run, timeout, idempotent,
                    needs_approval=needs_approval)  # fmt: skip


def idempotent(tool: BaseTool) -> BaseTool:
    """Mark a langchain tool idempotent (see `ToolSpec.idempotent`); use it above `@tool`."""
    tool.metadata = {**(tool.metadata or {}), IDEMPOTENT: True}
    return tool


def needs_approval(tool: BaseTool) -> BaseTool:
    """Mark a langchain tool as needing approval (see `ToolSpec.needs_approval`); use it above `@tool`."""
    tool.metadata = {**(tool.metadata or {}), NEEDS_APPROVAL: True}
    return tool


def _context_arg(tool: BaseTool) -> str | None:
    """The injected parameter typed `ToolContext`, if the tool asks for one."""
    fields: dict[str, Any] = getattr(tool.get_input_schema(), "model_fields", {})
    hidden = set(fields) - set(_call_fields(tool))
    for name in sorted(hidden):
        if fields[name].annotation is ToolContext:
            return name
    return None


def _call_fields(tool: BaseTool) -> list[str]:
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return list(schema.get("properties", {}))
    return list(getattr(schema, "model_fields", {}))


def _from_langchain(tool: BaseTool, timeout: float) -> ToolSpec:
    function = convert_to_openai_tool(tool, strict=True)["function"]
    context_arg = _context_arg(tool)

    async def run(arguments: dict[str, Any]) -> Any:
        return await tool.ainvoke(arguments)

    return ToolSpec(
        name=function["name"],
        description=function.get("description", ""),
        parameters=_strict_object(function.get("parameters", {})),
        run=run,
        timeout=timeout,
        idempotent=bool((tool.metadata or {}).get(IDEMPOTENT)),
        context_arg=context_arg,
        needs_approval=bool((tool.metadata or {}).get(NEEDS_APPROVAL)),
    )


@dataclass
class ToolRegistry:
    """Tools by name; built once, then only read."""

    _tools: dict[str, ToolSpec] = field(default_factory=dict)

    @classmethod
    def of(cls, tools: Iterable[BaseTool | ToolSpec], timeout: float = DEFAULT_TOOL_TIMEOUT_S) -> ToolRegistry:
        """A registry holding these tools (langchain `@tool`s or declared specs)."""
        registry = cls()
        for tool in tools:
            spec = tool if isinstance(tool, ToolSpec) else _from_langchain(tool, timeout)
            if spec.name in registry._tools:
                raise UsageError(f"two tools are named {spec.name!r}: rename one")
            registry._tools[spec.name] = spec
        return registry

    def get(self, name: str) -> ToolSpec:
        """The tool named `name`, or `UnknownTool`."""
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownTool(f"no tool named {name!r} (registered: {known})", tool=name) from None

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def requiring_approval(self, names: Iterable[str]) -> ToolRegistry:
        """This registry with the tools `names` marked `needs_approval` (a graph's approval policy)."""
        wanted = set(names)
        for name in wanted:
            self.get(name)
        return ToolRegistry({n: replace(s, needs_approval=True) if n in wanted else s for n, s in self._tools.items()})


@dataclass(frozen=True)
class ToolCall:
    """A validated call: the tool, its arguments and, once run, its result."""

    name: str
    arguments: dict[str, Any]
    result: Any = None


@dataclass(frozen=True)
class ToolContext:
    """Where a call comes from. A tool may ask for it as a parameter typed `ToolContext` and marked
    `InjectedToolArg` (hidden from the model), e.g. to make its own write idempotent by `key`.

    `key` names what makes the call distinct: the job, the step, the run of that step (LangGraph's
    step number, stable when a crashed run is replayed, new each time a loop comes back to the
    step), the tier and attempt of the cascade, and the call's index in the model's answer.
    """

    job_id: str
    step: str
    index: int
    run: int = 0
    tier: str = "slm"
    attempt: int = 1
    trace_parent: Mapping[str, str] | None = None
    """W3C context of the calling skill, when the call runs in another process."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The job's own values (`run_job(config=...)`, `Client.submit(config=...)`): per-job resources
    such as a tenant or a database path. Never settings or secrets. JSON values on a fleet."""

    @property
    def key(self) -> str:
        """The call's idempotency key."""
        return f"{self.job_id}:{self.step}:{self.run}:{self.tier}:{self.attempt}:{self.index}"


class ToolExecutor(Protocol):
    """Runs one validated tool call and returns its result (raises `ToolError`)."""

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Run `spec` with `arguments`."""
        ...

    async def resolve(self, job_id: str, key: str, answer: dict[str, Any]) -> None:
        """Settle a call whose outcome was unknown with a reviewer's answer."""
        ...


class InProcessExecutor:
    """Runs tools in this process, each under its own timeout; each call is a `tool_called` event."""

    emit: Callable[[Event], Awaitable[None]] | None = None
    """Where each call's `tool_called` event goes (a job sets it to its event sink)."""

    def __init__(self, emit: Callable[[Event], Awaitable[None]] | None = None) -> None:
        self.emit = emit

    async def resolve(self, job_id: str, key: str, answer: dict[str, Any]) -> None:
        """Nothing to settle: an in-process call's outcome is never unknown (it dies with its job)."""

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Run `spec` with `arguments`; tool exceptions become `ToolFailed`."""
        if spec.run is None:
            return None
        with telemetry.tool_span(spec.name, context.key, context.trace_parent) as span:
            telemetry.content(span, "gen_ai.tool.call.arguments", arguments)
            started, error = time.perf_counter(), None
            try:
                return await self._run(spec, arguments, context)
            except ToolError as exc:
                error = type(exc).__name__
                raise
            finally:
                telemetry.record_tool(spec.name, time.perf_counter() - started, error)
                if self.emit is not None:
                    data = ToolCalled(tool=spec.name, key=context.key, ok=error is None)
                    await self.emit(Event(kind="tool_called", step=context.step, data=data))

    async def _run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        assert spec.run is not None
        if spec.context_arg is not None:
            arguments = {**arguments, spec.context_arg: context}
        deadline = asyncio.timeout(spec.timeout)
        try:
            async with deadline:
                result = spec.run(arguments)
                if asyncio.iscoroutine(result):
                    result = await result
        except TimeoutError as exc:
            if not deadline.expired():  # the tool's own timeout (a socket, say): it failed
                raise ToolFailed(f"{spec.name} failed: {exc or 'timed out'}", tool=spec.name, key=context.key) from exc
            raise ToolTimeout(
                f"{spec.name} did not finish within {spec.timeout:g}s",
                tool=spec.name,
                key=context.key,
            ) from None
        except SlmflowError:
            raise
        except Exception as exc:  # a tool's own failure is data for the cascade, not a crash
            raise ToolFailed(f"{spec.name} failed: {exc}", tool=spec.name, key=context.key) from exc
        return result
