"""Progress events of a job: step started and finished, escalations, tool calls, status changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["Event", "EventKind", "EventSink", "StepSummary", "summarize_steps"]

EventKind = Literal["job_started", "step_started", "step_finished", "skill_escalated", "tool_called", "job_finished"]


class Event(BaseModel):
    """One thing that happened in a job, in the order it happened."""

    kind: EventKind
    step: str | None = None
    skill: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    id: str | None = None
    """Its id in the job's event stream (set when read back); resume reading after it."""


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
        if event.kind == "step_started":
            started[event.step] = event.at
        elif event.kind == "skill_escalated":
            summary.escalations.append(f"{data.get('reason')} -> {data.get('to')}: {data.get('detail', '')}")
        elif event.kind == "tool_called":
            summary.tools.append(f"{data.get('tool')} ({'ok' if data.get('ok') else 'failed'}, {data.get('worker')})")
        elif event.kind == "step_finished":
            summary.status, summary.tier = str(data.get("status")), data.get("tier")
            summary.calls += int(data.get("attempts") or 0)
            summary.input_tokens += int(data.get("input_tokens") or 0)
            summary.output_tokens += int(data.get("output_tokens") or 0)
            summary.confidence = data.get("confidence")
            if event.step in started:
                summary.seconds = (event.at - started[event.step]).total_seconds()
    return list(steps.values())
