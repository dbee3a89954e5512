"""Graphs: a job's LangGraph state graph with its input and output models, and skill nodes.

A project declares one `GraphSpec` per job (`graph = GraphSpec(...)` in its `graphs/` module). A
node built by `skill_node` runs a skill through the cascade with what the job provides through
LangGraph's runtime context (`JobContext`: endpoints, tools, executor, job id, event sink). A skill
no tier could answer pauses the graph with a LangGraph `interrupt`: the job is `needs_review`.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired, Protocol, TypedDict

from langgraph.config import get_config
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel

from slmflow.cascade import run_skill
from slmflow.errors import ToolOutcomeUnknown, UsageError
from slmflow.events import Event, EventSink
from slmflow.models import Endpoints
from slmflow.skills import Object, Skill, ToolCalls
from slmflow.tools import ToolExecutor, ToolRegistry
from slmflow.verdicts import review_errors

__all__ = ["GraphSpec", "JobContext", "JobState", "MemoryMemo", "StepMemo", "skill_node"]


class JobState(TypedDict):
    """State every slmflow graph carries; a project's state extends it with its own keys."""

    input: dict[str, Any]
    output: NotRequired[dict[str, Any]]
    skill_results: Annotated[list[dict[str, Any]], operator.add]


class StepMemo(Protocol):
    """Skill results a node must not recompute when it re-runs (LangGraph re-runs a paused node)."""

    async def recall(self, step: str) -> dict[str, Any] | None:
        """The remembered result of `step`, if any."""
        ...

    async def remember(self, step: str, result: dict[str, Any]) -> None:
        """Remember the result of `step`."""
        ...


@dataclass
class MemoryMemo:
    """A `StepMemo` in a dict (in-process jobs)."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def recall(self, step: str) -> dict[str, Any] | None:
        """The remembered result of `step`, if any."""
        return self.results.get(step)

    async def remember(self, step: str, result: dict[str, Any]) -> None:
        """Remember the result of `step`."""
        self.results[step] = result


@dataclass(frozen=True)
class JobContext:
    """What a running job hands its nodes (LangGraph runtime context)."""

    job_id: str
    endpoints: Endpoints
    tools: ToolRegistry
    executor: ToolExecutor
    emit: EventSink = field(default=lambda event: None)
    memo: StepMemo = field(default_factory=MemoryMemo)

    async def publish(self, event: Event) -> None:
        """Send an event to the sink (which may be sync or async)."""
        outcome = self.emit(event)
        if inspect.isawaitable(outcome):
            await outcome


@dataclass(frozen=True)
class GraphSpec:
    """A named job: its graph builder, input and output models, skills and tools."""

    name: str
    builder: StateGraph[Any, Any, Any, Any]
    input: type[BaseModel]
    output: type[BaseModel]
    tools: ToolRegistry
    skills: tuple[Skill, ...] = ()
    version: str = "1"
    description: str = ""

    def __post_init__(self) -> None:
        for skill in self.skills:
            if isinstance(skill.output, ToolCalls):
                for name in skill.output.tools:
                    self.tools.get(name)  # an unregistered grant fails here, at definition

    def input_fields(self) -> dict[str, str]:
        """Input field names and their JSON Schema types, for listings."""
        properties = self.input.model_json_schema().get("properties", {})
        return {name: str(prop.get("type", "any")) for name, prop in properties.items()}


NodeInputs = Callable[[Mapping[str, Any]], Mapping[str, Any]]
Node = Callable[[Mapping[str, Any], Runtime[JobContext]], Awaitable[dict[str, Any]]]


def skill_node(skill: Skill, inputs: NodeInputs, output_key: str, *, step: str | None = None) -> Node:
    """A graph node that runs `skill` on `inputs(state)` and writes its answer to `output_key`."""
    step_name = step or skill.name

    async def node(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
        context = runtime.context
        if context is None:
            raise UsageError(f"graph step {step_name!r} ran without a JobContext: run it as a job")
        # The run of this step: LangGraph's step number, the same when a crashed or paused run is
        # replayed, new each time a loop comes back here. Tool keys and the memo carry it.
        run = int(get_config().get("metadata", {}).get("langgraph_step", 0))
        values = dict(inputs(state))
        memo_key = f"{step_name}:{run}"
        # A step paused for review re-runs from its start when resumed: reuse its result.
        recorded = await context.memo.recall(memo_key)
        if recorded is None:
            recorded = await _run_settled(skill, step_name, run, values, context)
        if recorded["status"] == "ok":
            return {output_key: recorded["answer"], "skill_results": [recorded]}
        await context.memo.remember(memo_key, recorded)
        # Every tier failed: pause for a human. The payload is what a reviewer needs to answer; an
        # answer that fails the step's schema or checks is refused and the step asks again.
        payload: dict[str, Any] = {"step": step_name, "skill": skill.name, "result": recorded}
        while errors := review_errors(skill, answer := interrupt(payload), values, context.tools):
            payload = {**payload, "review_errors": errors}
        if isinstance(skill.output, Object):
            answer = skill.output.model.model_validate(answer).model_dump(mode="json")
        reviewed = {**recorded, "status": "ok", "tier": "human", "answer": answer}
        learning = context.endpoints.learning
        if learning is not None and learning.record:
            await learning.keep_review(skill, values, answer, context.tools, job_id=context.job_id, step=step_name)
        await context.publish(Event(kind="step_finished", step=step_name, skill=skill.name,
                                    data={"status": "ok", "tier": "human", "run": run}))  # fmt: skip
        return {output_key: answer, "skill_results": [reviewed]}

    node.__name__ = step_name
    return node


async def _run_settled(
    skill: Skill, step: str, run: int, values: Mapping[str, Any], context: JobContext
) -> dict[str, Any]:
    """Run the step; a tool call whose outcome is unknown pauses it until a reviewer settles the call."""
    while True:
        try:
            return await _run_step(skill, step, run, values, context)
        except ToolOutcomeUnknown as exc:
            payload = {"step": step, "skill": skill.name, "reason": "outcome_unknown", "message": exc.message,
                       **{k: exc.context.get(k) for k in ("tool", "key", "arguments")}}  # fmt: skip
            while errors := _settle_errors(answer := interrupt(payload)):
                payload = {**payload, "review_errors": errors}
            await context.executor.resolve(context.job_id, str(exc.context["key"]), answer)


def _settle_errors(answer: Any) -> list[str]:
    if isinstance(answer, dict) and (answer.get("retry") is True or "result" in answer):
        return []
    return ['answer {"result": <what the tool returned>} or {"retry": true} (run the call again)']


async def _run_step(
    skill: Skill, step: str, run: int, values: Mapping[str, Any], context: JobContext
) -> dict[str, Any]:
    await context.publish(Event(kind="step_started", step=step, skill=skill.name, data={"run": run}))
    result = await run_skill(
        skill, values, context.endpoints, tools=context.tools, executor=context.executor,
        job_id=context.job_id, step=step, run=run,
    )  # fmt: skip
    for escalation in result.escalations:
        await context.publish(Event(kind="skill_escalated", step=step, skill=skill.name,
                                    data=escalation.model_dump(mode="json")))  # fmt: skip
    last = result.attempts[-1] if result.attempts else None
    await context.publish(Event(kind="step_finished", step=step, skill=skill.name, data={
        "status": result.status, "tier": result.tier, "attempts": len(result.attempts), "run": run,
        "confidence": result.confidence if result.ok else (last.confidence if last else None),
        "input_tokens": sum(a.input_tokens for a in result.attempts),
        "output_tokens": sum(a.output_tokens for a in result.attempts),
    }))  # fmt: skip
    return {**result.model_dump(mode="json"), "step": step}
