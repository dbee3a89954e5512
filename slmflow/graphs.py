"""Graphs: a job's LangGraph state graph with its input and output models, and what a job hands
its nodes.

A project declares one `GraphSpec` per job (`graph = GraphSpec(...)` in its `graphs/` module). Its
nodes run with LangGraph's runtime context, a `JobContext`: endpoints, tools, executor, job id,
event sink, the job's config and the step memo. The nodes slmflow builds are in `slmflow.nodes`.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired, Protocol, TypedDict

from langgraph.graph import StateGraph
from pydantic import BaseModel

from slmflow.events import Event, EventSink
from slmflow.models import Endpoints
from slmflow.skills import Skill, ToolCalls
from slmflow.tools import ToolExecutor, ToolRegistry

__all__ = ["GraphSpec", "JobContext", "JobState", "MemoryMemo", "StepMemo"]


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
    config: Mapping[str, Any] = field(default_factory=dict)
    """The job's own values (`ToolContext.config`)."""
    _calls: dict[str, int] = field(default_factory=dict)

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
    approve: Iterable[str] = ()
    """The graph's approval policy: tools whose calls need approval here, besides those marked
    `needs_approval` where they are declared."""

    def __post_init__(self) -> None:
        approve = tuple(self.approve)
        object.__setattr__(self, "approve", approve)
        if approve:
            object.__setattr__(self, "tools", self.tools.requiring_approval(approve))
        for skill in self.skills:
            if isinstance(skill.output, ToolCalls):
                for name in skill.output.tools:
                    self.tools.get(name)  # an unregistered grant fails here, at definition

    def input_fields(self) -> dict[str, str]:
        """Input field names and their JSON Schema types, for listings."""
        properties = self.input.model_json_schema().get("properties", {})
        return {name: str(prop.get("type", "any")) for name, prop in properties.items()}
