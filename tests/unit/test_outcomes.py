"""One outcome family: typed reviews, approvals, failures, one usage shape, events typed by kind."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slmflow import (
    Approval,
    AskedReview,
    Event,
    JobFailure,
    JobRecord,
    JobResult,
    JobStatus,
    JobUsage,
    OutcomeUnknownReview,
    SkillResult,
    StepFinished,
    Tier,
    ToolCalled,
    UnansweredReview,
)
from slmflow.errors import ToolNotGranted
from slmflow.events import JobStarted, Truncated
from slmflow.results import Attempt, Escalation, EscalationReason, TierUsage, Usage


def test_a_record_is_a_result_and_dumps_to_what_it_reads() -> None:
    record = JobRecord(job_id="j1", graph="g", input={"x": 1}, status=JobStatus.NEEDS_REVIEW,
                       review=AskedReview(step="decide", question="Refund?"))  # fmt: skip
    assert isinstance(record, JobResult)
    again = JobRecord.model_validate_json(record.model_dump_json())
    assert again == record and isinstance(again.review, AskedReview)
    assert record.result() == JobResult(job_id="j1", graph="g", status=JobStatus.NEEDS_REVIEW, review=record.review)


def test_records_written_before_the_typed_family_still_read() -> None:
    # A paused job's record from an older worker: `id`, and a review without `reason`.
    old = {"id": "j0", "graph": "g", "input": {}, "status": "needs_review",
           "review": {"step": "s", "skill": "k", "reasons": ["check_failed"], "last_errors": ["bad"],
                      "last_output": "x", "review_errors": []},
           "error": None, "usage": {"tiers": {}, "all_llm_cost": 0.0}}  # fmt: skip
    record = JobRecord.model_validate(old)
    assert record.job_id == "j0" and isinstance(record.review, UnansweredReview)
    assert record.review.reasons == ["check_failed"] and record.review.last_output == "x"


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"reason": "unanswered", "step": "s", "skill": "k"}, UnansweredReview),
        ({"reason": "asked", "step": "s", "question": "why?"}, AskedReview),
        ({"reason": "outcome_unknown", "step": "s", "tool": "refund", "key": "j:s:1:slm:1:0"}, OutcomeUnknownReview),
    ],
)
def test_a_review_is_typed_by_its_reason(payload: dict[str, object], kind: type) -> None:
    result = JobResult.model_validate({"job_id": "j", "graph": "g", "status": "needs_review", "review": payload})
    assert type(result.review) is kind


def test_an_unknown_review_reason_is_refused() -> None:
    with pytest.raises(ValidationError):
        JobResult.model_validate({"job_id": "j", "graph": "g", "status": "needs_review",
                                  "review": {"reason": "vibes", "step": "s"}})  # fmt: skip


def test_a_failure_rebuilds_its_typed_error() -> None:
    failure = JobFailure.of(ToolNotGranted("no", tool="refund"))
    assert failure.type == "ToolNotGranted" and failure.context == {"tool": "refund"}
    error = failure.error()
    assert isinstance(error, ToolNotGranted) and error.context["tool"] == "refund"


def test_an_approval_shows_its_calls_as_a_decision_names_them() -> None:
    approval = Approval.model_validate({"step": "s", "round": 2, "calls": [{"name": "refund", "arguments": {"o": 1}}]})
    assert approval.shown() == [{"name": "refund", "arguments": {"o": 1}}] and approval.review_errors == []


def test_job_usage_is_the_skill_usage_shape_plus_escalations() -> None:
    first, second = Usage(), Usage()
    first.add_attempt(Attempt(tier=Tier.SLM, number=1, model="m", ok=False, input_tokens=10, output_tokens=2), 0.5)
    second.add_attempt(Attempt(tier=Tier.SLM, number=1, model="m", ok=True, input_tokens=7, output_tokens=1), 0.25)
    second.add_attempt(Attempt(tier=Tier.LLM, number=1, model="big", ok=True, input_tokens=9, output_tokens=3), 2.0)
    escalation = Escalation(skill="k", from_tier=Tier.SLM, to="llm", reason=EscalationReason.CHECK_FAILED, detail="d")
    results = [SkillResult(skill="k", status="needs_review", usage=first),
               SkillResult(skill="k", status="ok", usage=second, escalations=[escalation])]  # fmt: skip
    usage = JobUsage.of(results, latency_s=1.23456)
    assert (usage.calls(Tier.SLM), usage.calls(Tier.LLM), usage.calls(Tier.HUMAN)) == (2, 1, 0)
    assert usage.tokens(Tier.SLM) == (17, 3) and usage.cost == pytest.approx(2.75)
    assert usage.escalations == [escalation] and usage.latency_s == 1.235
    dumped = usage.model_dump(mode="json")
    assert dumped["cost"] == pytest.approx(2.75) and dumped["tiers"]["slm"]["calls"] == 2
    assert JobUsage.model_validate(dumped) == usage  # the computed cost is ignored on the way back
    assert isinstance(usage, Usage) and usage.tiers[Tier.LLM] == TierUsage(calls=1, input_tokens=9, output_tokens=3,
                                                                           cost=2.0)  # fmt: skip


def test_an_event_payload_is_the_model_of_its_kind() -> None:
    event = Event(kind="step_finished", step="s", data={"status": "ok", "tier": "slm", "attempts": 1})
    assert isinstance(event.data, StepFinished) and event.data.attempts == 1
    again = Event.model_validate_json(event.model_dump_json())
    assert again == event and isinstance(again.data, StepFinished)
    # A payload that would also fit another kind's model is still read as its own kind's.
    started = Event.model_validate_json(
        Event(kind="job_started", data=JobStarted(job_id="j", graph="g")).model_dump_json()
    )
    assert isinstance(started.data, JobStarted)


def test_an_event_whose_payload_is_of_another_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="tool_called event carries ToolCalled"):
        Event(kind="tool_called", data=StepFinished(status="ok"))
    with pytest.raises(ValidationError):
        Event(kind="step_finished", data={"status": "maybe"})


def test_a_truncated_payload_reads_back_as_truncated() -> None:
    event = Event(kind="tool_called", data=Truncated(bytes=70000))
    again = Event.model_validate_json(event.model_dump_json())
    assert isinstance(again.data, Truncated) and again.data.bytes == 70000
    assert not isinstance(again.data, ToolCalled)
