"""Progress events of a job: step started and finished, escalations, tool calls, status changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from slmflow.results import Escalation

__all__ = [
    "Event", "EventData", "EventKind", "EventSink", "JobFinished", "JobStarted", "StepFinished", "StepStarted",
    "StepSummary", "ToolCalled", "Truncated", "summarize_steps",
]  # fmt: skip

EventKind = Literal["job_started", "step_started", "step_finished", "skill_escalated", "tool_called", "job_finished"]


class JobStarted(BaseModel):
    """A run of the job began (`resumed`: from a checkpoint or a person's answer)."""

    job_id: str
    graph: str
    resumed: bool = False
    worker: str | None = None
    """The jobs worker running it (on a fleet)."""


class StepStarted(BaseModel):
    """A skill step began its `run` (a step inside a loop runs more than once)."""

    run: int = 1


class StepFinished(BaseModel):
    """A step ended: `ok`, `needs_review`, `proposed` (calls wait for approval), `routed` (failed, the
    job goes on at node `to`) or `failed` (the job fails)."""

    status: Literal["ok", "needs_review", "proposed", "routed", "failed"]
    tier: str | None = None
    """Who answered: `slm`, `llm`, `human`; None when nobody did."""
    run: int = 1
    attempts: int = 0
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    approval: Literal["approved", "edited"] | None = None
    """For a step whose proposed calls ran once approved: whether they were edited first."""
    to: str | None = None
    """For `routed`: the node the job goes on at."""


class ToolCalled(BaseModel):
    """A tool call ran (or failed); `worker` is the tools worker that ran it on a fleet."""

    tool: str
    key: str
    ok: bool
    worker: str | None = None


class JobFinished(BaseModel):
    """The run ended with this status (`needs_review`/`awaiting_approval`: paused)."""

    status: str


class Truncated(BaseModel):
    """The payload of an event too large to keep (`SLMFLOW_MAX_EVENT_BYTES`): only its size is kept."""

    truncated: Literal[True] = True
    bytes: int


EventData = JobStarted | StepStarted | StepFinished | Escalation | ToolCalled | JobFinished | Truncated
"""An event's payload: one model per kind (`skill_escalated` carries the `Escalation`), or `Truncated`."""

_PAYLOADS: dict[str, type[BaseModel]] = {
    "job_started": JobStarted, "step_started": StepStarted, "step_finished": StepFinished,
    "skill_escalated": Escalation, "tool_called": ToolCalled, "job_finished": JobFinished,
}  # fmt: skip


class Event(BaseModel):
    """One thing that happened in a job, in the order it happened; `data` is typed by `kind`."""

    kind: EventKind
    step: str | None = None
    skill: str | None = None
    data: EventData
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    id: str | None = None
    """Its id in the job's event stream (set when read back); resume reading after it."""

    @model_validator(mode="before")
    @classmethod
    def _typed_data(cls, value: Any) -> Any:
        # The payload's model is the kind's, never a guess among the union's members.
        if isinstance(value, dict) and isinstance(value.get("data"), dict) and value.get("kind") in _PAYLOADS:
            payload = Truncated if value["data"].get("truncated") is True else _PAYLOADS[value["kind"]]
            return {**value, "data": payload.model_validate(value["data"])}
        return value

    @model_validator(mode="after")
    def _data_of_kind(self) -> Event:
        if type(self.data) not in (_PAYLOADS[self.kind], Truncated):
            raise ValueError(
                f"a {self.kind} event carries {_PAYLOADS[self.kind].__name__}, not {type(self.data).__name__}"
            )
        return self


EventSink = Callable[[Event], None | Awaitable[None]]
"""Receives events as they happen (the CLI's progress display, a Redis stream, a list in tests)."""


class StepSummary(BaseModel):
    """One step of a job as its events tell it (for `slmflow trace`)."""

    step: str
    skill: str | None = None
    status: str = "running"
    tier: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    confidence: float | None = None
    seconds: float | None = None
    escalations: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)


def summarize_steps(events: list[Event]) -> list[StepSummary]:
    """The job's steps in the order they started, with timing, tier, tokens, escalations, tools."""
    steps: dict[str, StepSummary] = {}
    started: dict[str, datetime] = {}
    for event in events:
        if event.step is None:
            continue
        summary = steps.setdefault(event.step, StepSummary(step=event.step, skill=event.skill))
        data = event.data
        if isinstance(data, StepStarted):
            started[event.step] = event.at
        elif isinstance(data, Escalation):
            summary.escalations.append(f"{data.reason} -> {data.to}: {data.detail}")
        elif isinstance(data, ToolCalled):
            summary.tools.append(f"{data.tool} ({'ok' if data.ok else 'failed'}, {data.worker})")
        elif isinstance(data, StepFinished):
            summary.status, summary.tier = data.status, data.tier
            summary.calls += data.attempts
            summary.input_tokens += data.input_tokens
            summary.output_tokens += data.output_tokens
            summary.confidence = data.confidence
            if event.step in started:
                summary.seconds = (event.at - started[event.step]).total_seconds()
    return list(steps.values())
