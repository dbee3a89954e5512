"""Progress events of a job: step started and finished, escalations, tool calls, status changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["Event", "EventKind", "EventSink"]

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
