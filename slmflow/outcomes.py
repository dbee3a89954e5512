"""A job's outcome, typed: its status, output, why it waits or failed, and what it spent.

One family: `JobResult` is what a run returns (in-process or from a fleet); `JobRecord` extends it
with what the fleet keeps about the job (input, timestamps, attempts). A paused job says why as a
typed `Review` (a step no tier could answer, a question a code node asked, a tool call whose outcome
is unknown) or `Approval` (calls proposed, not yet run); a failed one as a `JobFailure`. Usage has one
shape everywhere (`Usage` per tier; `JobUsage` adds the escalations and the job's latency).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Discriminator, Field, Tag

from slmflow.errors import SlmflowError, UsageError
from slmflow.redaction import excerpt
from slmflow.results import Escalation, SkillResult, Usage

__all__ = [
    "TERMINAL", "Approval", "AskedReview", "JobFailure", "JobRecord", "JobResult", "JobStatus", "JobUsage",
    "OutcomeUnknownReview", "ProposedCall", "Review", "UnansweredReview", "approval_answer", "approval_message",
    "unanswered",
]  # fmt: skip


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"
    AWAITING_APPROVAL = "awaiting_approval"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves (`needs_review` and `awaiting_approval` do: a human's answer resumes it)."""


class JobUsage(Usage):
    """A job's usage per tier (calls, tokens, time, cost), its escalations, and how long it ran."""

    escalations: list[Escalation] = Field(default_factory=list)
    latency_s: float = 0.0

    @classmethod
    def of(cls, results: Iterable[SkillResult], latency_s: float) -> JobUsage:
        """Usage summed over a job's skill runs."""
        usage = cls(latency_s=round(latency_s, 3))
        for result in results:
            usage.merge(result.usage)
            usage.escalations.extend(result.escalations)
        return usage


class UnansweredReview(BaseModel):
    """No tier could answer a step: a person answers it as the step's skill would."""

    reason: Literal["unanswered"] = "unanswered"
    step: str
    skill: str
    reasons: list[str] = Field(default_factory=list)
    """Why each attempt was not kept, in order."""
    last_errors: list[str] = Field(default_factory=list)
    last_output: Any = None
    """What the model last answered (text, or tool calls as written)."""
    review_errors: list[str] = Field(default_factory=list)
    """Why the last answer given to this pause was refused (it must pass the step's checks)."""


class AskedReview(BaseModel):
    """A code node asked a person (`ask_human`)."""

    reason: Literal["asked"] = "asked"
    step: str
    question: str
    details: dict[str, Any] = Field(default_factory=dict)
    review_errors: list[str] = Field(default_factory=list)


class OutcomeUnknownReview(BaseModel):
    """A tool call may or may not have run: a person settles it (`{"result": ...}` or `{"retry": true}`)."""

    reason: Literal["outcome_unknown"] = "outcome_unknown"
    step: str
    skill: str | None = None
    tool: str | None = None
    key: str | None = None
    arguments: dict[str, Any] | None = None
    message: str = ""
    review_errors: list[str] = Field(default_factory=list)


def _review_kind(value: Any) -> str:
    # Records written before reviews had a `reason` for every kind were the unanswered kind.
    return str(value.get("reason", "unanswered") if isinstance(value, dict) else value.reason)


Review = Annotated[
    Annotated[UnansweredReview, Tag("unanswered")]
    | Annotated[AskedReview, Tag("asked")]
    | Annotated[OutcomeUnknownReview, Tag("outcome_unknown")],
    Discriminator(_review_kind),
]
"""What a `needs_review` job waits for; `reason` tells which kind."""


class ProposedCall(BaseModel):
    """A tool call proposed for approval (checked, not run)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Approval(BaseModel):
    """What an `awaiting_approval` job waits for: calls proposed by a step, to approve, edit or reject."""

    step: str
    skill: str | None = None
    """The proposing skill; None for a code node (`propose_calls`)."""
    round: int = 0
    """Which proposal of the step this is (a rejection makes the next one); pin a decision to it."""
    calls: list[ProposedCall]
    tier: str | None = None
    """Who proposed them: `slm`, `llm`, or `code`."""
    confidence: float | None = None
    review_errors: list[str] = Field(default_factory=list)
    """Why the last decision given to this pause was refused."""

    def shown(self) -> list[dict[str, Any]]:
        """The calls as a decision names them (`approval_answer(shown=...)`)."""
        return [call.model_dump(mode="json") for call in self.calls]


class JobFailure(BaseModel):
    """The typed error that ended a failed job (`SlmflowError.to_dict()`)."""

    type: str
    message: str
    context: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, error: SlmflowError) -> JobFailure:
        """The failure of a job that `error` ended."""
        return cls.model_validate(error.to_dict())

    def error(self) -> SlmflowError:
        """The error, rebuilt as its own type (unknown types as `SlmflowError`)."""
        return SlmflowError.from_dict(self.model_dump(mode="json"))


class JobResult(BaseModel):
    """What a finished (or paused) job produced."""

    job_id: str = Field(validation_alias=AliasChoices("job_id", "id"))
    graph: str
    status: JobStatus
    output: dict[str, Any] | None = None
    error: JobFailure | None = None
    """For `failed`: the error that ended the job."""
    review: Review | None = None
    """For `needs_review`: what the job waits for a person to answer."""
    approval: Approval | None = None
    """For `awaiting_approval`: the calls a step proposes."""
    usage: JobUsage = Field(default_factory=JobUsage)
    trace_id: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class JobRecord(JobResult):
    """Everything a fleet knows about one job: its result so far, plus its input and history."""

    graph_version: str = "1"
    status: JobStatus = JobStatus.QUEUED
    input: dict[str, Any]
    review_answer: dict[str, Any] | None = None
    """A reviewer's answer or approval decision (`{"answer": ...}`) the next run resumes the paused step with."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    """The job's own values, handed to its nodes and tools (`ToolContext.config`)."""
    idempotency_key: str | None = None
    attempts: int = 0
    """Runs of this job on workers (a takeover after a crash is one more)."""
    trace_context: dict[str, str] = Field(default_factory=dict)
    """W3C context of the submit, so that every run of the job joins the submit's trace."""
    created_at: datetime = Field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def result(self) -> JobResult:
        """The job's result, without the fleet's bookkeeping."""
        return JobResult.model_validate(self.model_dump(include=set(JobResult.model_fields)))


def approval_answer(
    edit: list[dict[str, Any]] | None = None,
    reject: str | None = None,
    shown: list[dict[str, Any]] | None = None,
    round: int | None = None,
) -> dict[str, Any]:
    """The answer that resumes a step paused for approval: approve (the `shown` calls, when given:
    the step refuses an approval of calls it no longer proposes), approve edited calls, or reject;
    with `round`, the decision holds only for that proposal of the step (the one the person saw)."""
    answer = _decision(edit, reject, shown)
    return answer if round is None else {**answer, "round": round}


def _decision(
    edit: list[dict[str, Any]] | None, reject: str | None, shown: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if edit is not None and reject is not None:
        raise UsageError("approve with edited calls or reject them, not both")
    if reject is not None:
        if not isinstance(reject, str) or not reject.strip():
            raise UsageError("a rejection needs a reason (the step's model sees it on its next attempt)")
        return {"reject": reject}
    if edit is not None:
        return {"edit": edit}
    return {"approve": True} if shown is None else {"approve": True, "calls": shown}


def approval_message(job_id: str, approval: Approval | None) -> str:
    """What a job paused for approval waits for, and how to decide."""
    calls = ", ".join(f"{c.name}({excerpt(str(c.arguments), 120)})" for c in approval.calls) if approval else ""
    step = approval.step if approval else None
    return (f"job {job_id} waits for approval at step {step!r} of: {calls or 'no call'}; decide with "
            f"Job.approve() or `slmflow approve {job_id}` (--edit FILE, --reject WHY)")  # fmt: skip


def unanswered(payload: dict[str, Any]) -> UnansweredReview:
    """The review of a step no tier could answer, from its pause's payload (its skill result)."""
    attempts = SkillResult.model_validate(payload["result"]).attempts
    return UnansweredReview(
        step=payload["step"],
        skill=payload["skill"],
        reasons=[str(a.reason) for a in attempts if not a.ok and a.reason is not None],
        last_errors=attempts[-1].errors if attempts else [],
        last_output=attempts[-1].output if attempts else None,
        review_errors=payload.get("review_errors", []),
    )
