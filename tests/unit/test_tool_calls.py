"""Tool calls are keyed by what makes them distinct, can see their context, and never run twice blindly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from langchain_core.tools import InjectedToolArg, tool

from slmflow import Skill, ToolCalls, ToolContext, ToolOutcomeUnknown, ToolRegistry, idempotent, run_skill
from slmflow.errors import ToolFailed
from slmflow.testing import Reply, ScriptedServer
from slmflow.tools import InProcessExecutor, ToolSpec

SEEN: list[ToolContext] = []


@idempotent
@tool
def stamp(note: str, context: Annotated[ToolContext, InjectedToolArg]) -> str:
    """Stamp a note (once per call key)."""
    SEEN.append(context)
    return f"{note}@{context.key}"


@tool
def charge(amount: int) -> str:
    """Charge an amount."""
    return "charged"


skill = Skill(name="stamper", instructions="Stamp it.", prompt="{text}", output=ToolCalls(tools=("stamp",)))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({}) as server:
        yield server


class FailingFirst(InProcessExecutor):
    """Fails the first call it gets; records every key."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        self.keys.append(context.key)
        if len(self.keys) == 1:
            raise ToolFailed("the shop was down", tool=spec.name)
        return await super().run(spec, arguments, context)


class Unknown(InProcessExecutor):
    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        raise ToolOutcomeUnknown("interrupted", tool=spec.name, key=context.key, arguments=arguments)


def test_an_injected_context_is_hidden_from_the_model_and_idempotency_is_declared() -> None:
    registry = ToolRegistry.of([stamp, charge])
    spec = registry.get("stamp")
    assert spec.context_arg == "context" and spec.idempotent
    assert "context" not in spec.parameters["properties"]
    assert not registry.get("charge").idempotent and registry.get("charge").context_arg is None


async def test_every_attempt_of_a_step_calls_with_its_own_key_and_the_tool_sees_it(server: ScriptedServer) -> None:
    SEEN.clear()
    call = Reply(tool_calls=[("stamp", {"note": "hi"})])
    server.scripts["slm"] = [call, call]
    executor = FailingFirst()
    endpoints = server.endpoints("slm")
    try:
        result = await run_skill(skill, {"text": "x"}, endpoints, tools=ToolRegistry.of([stamp]), executor=executor,
                                 job_id="job1", step="stamp_it", run=4)  # fmt: skip
    finally:
        await endpoints.aclose()
    assert result.ok
    # The retry after a failed call is a new attempt, a new key: it never reads the first one's failure.
    assert executor.keys == ["job1:stamp_it:4:slm:1:0", "job1:stamp_it:4:slm:2:0"]
    assert [c.key for c in SEEN] == ["job1:stamp_it:4:slm:2:0"]
    assert result.answer[0]["result"] == "hi@job1:stamp_it:4:slm:2:0"


async def test_an_unknown_outcome_is_never_retried_by_the_cascade(server: ScriptedServer) -> None:
    server.scripts["slm"] = [Reply(tool_calls=[("stamp", {"note": "hi"})])] * 3
    endpoints = server.endpoints("slm")
    try:
        with pytest.raises(ToolOutcomeUnknown):
            await run_skill(skill, {"text": "x"}, endpoints, tools=ToolRegistry.of([stamp]), executor=Unknown())
    finally:
        await endpoints.aclose()
    assert len(server.requests_for("slm")) == 1  # no second attempt, which would call it again
