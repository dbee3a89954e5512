"""A job's record as the fleet stores it and the SDK returns it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from slmflow.jobs import JobStatus, JobUsage

__all__ = ["TERMINAL", "JobRecord"]

TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves (`needs_review` and `awaiting_approval` do: a human's answer resumes it)."""


def _now() -> datetime:
    return datetime.now(UTC)


class JobRecord(BaseModel):
    """Everything known about one job."""

    id: str
    graph: str
    graph_version: str = "1"
    status: JobStatus = JobStatus.QUEUED
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    """The typed error (`SlmflowError.to_dict()`) of a failed job."""
    review: dict[str, Any] | None = None
    """For `needs_review`: the step waiting for a human and why no tier could answer it."""
    approval: dict[str, Any] | None = None
    """For `awaiting_approval`: the step, the proposed calls (`calls`), who proposed them and how sure."""
    review_answer: dict[str, Any] | None = None
    """A reviewer's answer or approval decision (`{"answer": ...}`) the next run resumes the paused step with."""
    usage: JobUsage = Field(default_factory=JobUsage)
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    """The job's own values, handed to its nodes and tools (`ToolContext.config`)."""
    idempotency_key: str | None = None
    attempts: int = 0
    """Runs of this job on workers (a takeover after a crash is one more)."""
    trace_id: str | None = None
    trace_context: dict[str, str] = Field(default_factory=dict)
    """W3C context of the submit, so that every run of the job joins the submit's trace."""
    created_at: datetime = Field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
