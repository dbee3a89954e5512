"""Running a job in-process: validate the input, run the graph with a checkpointer, sum usage.

The thread id of a job's checkpoints is its job id, so a job run again with the same id on a
durable checkpointer resumes where it stopped.
"""

from __future__ import annotations

import functools
import time
import uuid
import weakref
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.types import Command, StateSnapshot
from pydantic import BaseModel, Field, ValidationError

from slmflow import telemetry
from slmflow.answers import Tier
from slmflow.errors import InvalidInput, SlmflowError, UsageError
from slmflow.events import Event, EventSink
from slmflow.graphs import GraphSpec, JobContext, MemoryMemo, StepMemo
from slmflow.models import Endpoints
from slmflow.nodes import APPROVAL, ASKED
from slmflow.redaction import excerpt
from slmflow.results import Escalation, SkillResult, Usage
from slmflow.tools import InProcessExecutor, ToolExecutor
from slmflow.validation import json_object, validate

__all__ = [
    "NO_RESUME", "RESERVED_CONFIG", "JobResult", "JobStatus", "JobUsage", "approval_answer", "approval_message",
    "job_config", "run_job", "validate_input",
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


class JobUsage(BaseModel):
    """A job's calls and tokens per tier, its escalations, and its cost against an all-LLM run."""

    calls: dict[str, int] = Field(default_factory=lambda: {"slm": 0, "llm": 0})
    tokens: dict[str, dict[str, int]] = Field(default_factory=dict)
    escalations: list[dict[str, Any]] = Field(default_factory=list)
    cost: dict[str, float] = Field(default_factory=lambda: {"actual": 0.0, "all_llm": 0.0})
    latency_s: float = 0.0

    @classmethod
    def of(cls, results: list[SkillResult], latency_s: float) -> JobUsage:
        """Usage summed over a job's skill runs."""
        usage, escalations = Usage(), list[Escalation]()
        for result in results:
            usage.merge(result.usage)
            escalations.extend(result.escalations)
        return cls(
            calls={tier: usage.tiers[tier].calls if tier in usage.tiers else 0 for tier in (Tier.SLM, Tier.LLM)},
            tokens={str(tier): {"input": t.input_tokens, "output": t.output_tokens} for tier, t in usage.tiers.items()},
            escalations=[
                {
                    "step": e.step,
                    "skill": e.skill,
                    "reason": str(e.reason),
                    "detail": e.detail,
                    "to": e.to,
                }
                for e in escalations
            ],
            cost={"actual": round(usage.cost, 8), "all_llm": round(usage.all_llm_cost, 8)},
            latency_s=round(latency_s, 3),
        )


class JobResult(BaseModel):
    """What a finished (or paused) job produced."""

    job_id: str
    graph: str
    status: JobStatus
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    review: dict[str, Any] | None = None
    """For `needs_review`: the step waiting for a human, why no tier could answer it, and what the
    model last answered."""
    approval: dict[str, Any] | None = None
    """For `awaiting_approval`: the step, the proposed calls (`calls`), who proposed them and how sure."""
    usage: JobUsage = Field(default_factory=JobUsage)
    trace_id: str | None = None


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


def approval_message(job_id: str, approval: Mapping[str, Any] | None) -> str:
    """What a job paused for approval waits for, and how to decide."""
    approval = approval or {}
    calls = ", ".join(f"{c.get('name')}({excerpt(str(c.get('arguments')), 120)})" for c in approval.get("calls", []))
    return (f"job {job_id} waits for approval at step {approval.get('step')!r} of: {calls or 'no call'}; decide with "
            f"Job.approve() or `slmflow approve {job_id}` (--edit FILE, --reject WHY)")  # fmt: skip


def validate_input(spec: GraphSpec, data: Mapping[str, Any]) -> BaseModel:
    """The graph's input model for `data`, or `InvalidInput` naming the first bad field.

    The SDK's validator (`slmflow.validation`) decides first, on the same JSON Schema the catalog
    publishes, so that the worker is exactly as strict as `submit`; then pydantic, whose refusals
    (a custom validator, a strict field) are typed `InvalidInput` too.
    """
    plain = json_object(data, "input")
    try:
        validate(_input_schema(spec.input), plain, graph=spec.name)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message} (expected fields: {', '.join(spec.input_fields())})",
                           **exc.context) from None  # fmt: skip
    try:
        return spec.input.model_validate(plain)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise InvalidInput(
            f"input for graph {spec.name!r} is invalid: {where}: {excerpt(str(first['msg']), 200)} "
            f"(expected fields: {', '.join(spec.input_fields())})",
            graph=spec.name,
            field=where,
        ) from None


@functools.lru_cache(maxsize=256)
def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema a graph's input model publishes in the catalog (computed once per model)."""
    return model.model_json_schema()


_MEMOS: weakref.WeakKeyDictionary[BaseCheckpointSaver[str], dict[str, MemoryMemo]] = weakref.WeakKeyDictionary()


def _memo_of(checkpointer: BaseCheckpointSaver[str], job_id: str) -> MemoryMemo:
    """The default step memo of a job: in memory, as long as its checkpointer lives (a job resumed on
    the same checkpointer finds its paused steps' results; a durable one needs a durable memo)."""
    return _MEMOS.setdefault(checkpointer, {}).setdefault(job_id, MemoryMemo())


NO_RESUME: Any = object()
"""Marker: the run is not a review's resumption."""


async def run_job(
    spec: GraphSpec,
    data: Mapping[str, Any],
    *,
    endpoints: Endpoints,
    checkpointer: BaseCheckpointSaver[str],
    job_id: str | None = None,
    executor: ToolExecutor | None = None,
    emit: EventSink | None = None,
    memo: StepMemo | None = None,
    resume: Any = NO_RESUME,
    trace_parent: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> JobResult:
    """Run one job to its end (or to a pause for review) and return its result.

    A job whose thread already has a checkpoint (its earlier run crashed) continues from it
    instead of starting over; `resume` is a reviewer's answer for a job paused in `needs_review`.
    `config` is the job's own values: LangGraph `configurable` for its nodes, and
    `ToolContext.config` for its tools. Bad input raises `InvalidInput` before anything runs.
    Errors of slmflow's own kind inside the job end it `failed` with the error kept; anything else
    is a bug and propagates.
    """
    job_input = validate_input(spec, data)
    job_id = job_id or uuid.uuid4().hex
    values = job_config(config)
    in_process = InProcessExecutor()
    context = JobContext(job_id, endpoints, spec.tools, executor or in_process, emit or (lambda _: None),
                         memo or _memo_of(checkpointer, job_id), values)  # fmt: skip
    in_process.emit = context.publish
    graph = _compiled(spec.builder, checkpointer)
    run_config: RunnableConfig = {"configurable": {**values, "thread_id": job_id}}
    payload: Any = {"input": job_input.model_dump(mode="json"), "skill_results": []}
    if resume is not NO_RESUME and not (await graph.aget_state(run_config)).interrupts:
        resume = NO_RESUME  # the answer was taken by an earlier run that crashed after it: carry on
    if resume is not NO_RESUME:
        payload = Command(resume=resume)
    elif await checkpointer.aget_tuple(run_config) is not None:
        payload = None  # LangGraph continues the thread from its last checkpoint
    with telemetry.job_span(spec.name, job_id, trace_parent):
        result = await _invoke(
            spec, graph, payload, run_config, context, resumed=payload is None or resume is not NO_RESUME
        )
        result.trace_id = telemetry.current_trace_id()
        return result


RESERVED_CONFIG = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns"})


def job_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The job's own values, or `InvalidInput` for a key LangGraph reserves."""
    values = dict(config or {})
    for key in values:
        if not isinstance(key, str) or key in RESERVED_CONFIG or key.startswith(("__", "checkpoint_")):
            raise InvalidInput(f"config key {key!r} is reserved (thread_id is the job id; __* and checkpoint_* are "
                               "LangGraph's): rename it", field="config")  # fmt: skip
    return values


async def _invoke(
    spec: GraphSpec, graph: Any, payload: Any, config: RunnableConfig, context: JobContext, *, resumed: bool
) -> JobResult:
    job_id = context.job_id
    started = time.perf_counter()
    await context.publish(Event(kind="job_started", data={"job_id": job_id, "graph": spec.name, "resumed": resumed}))
    try:
        # durability "sync": every step's checkpoint is written before the next step starts.
        await graph.ainvoke(payload, config, context=context, durability="sync")
    except UsageError:
        raise
    except SlmflowError as exc:
        result = JobResult(job_id=job_id, graph=spec.name, status=JobStatus.FAILED, error=exc.to_dict())
        await context.publish(Event(kind="job_finished", data={"status": result.status}))
        return result
    result = _result(spec, job_id, await graph.aget_state(config), time.perf_counter() - started)
    await context.publish(Event(kind="job_finished", data={"status": result.status}))
    telemetry.record_job(spec.name, result.status, time.perf_counter() - started)
    return result


@functools.lru_cache(maxsize=64)
def _compiled(builder: StateGraph[Any, Any, Any, Any], checkpointer: BaseCheckpointSaver[str]) -> Any:
    # Compiling inspects every node's code: once per (graph, checkpointer), not once per job.
    return builder.compile(checkpointer=checkpointer)


def _result(spec: GraphSpec, job_id: str, state: StateSnapshot, latency_s: float) -> JobResult:
    values: dict[str, Any] = dict(state.values)
    results = [SkillResult.model_validate(r) for r in values.get("skill_results", [])]
    review = approval = None
    output = None
    if state.interrupts and state.interrupts[0].value.get("reason") == APPROVAL:
        paused = state.interrupts[0].value
        approval = {k: v for k, v in paused.items() if k not in ("reason", "result")}
        approval.setdefault("review_errors", [])
        if "result" in paused:  # the proposing run's calls and tokens count in the job's usage
            results.append(SkillResult.model_validate(paused["result"]))
        status = JobStatus.AWAITING_APPROVAL
    elif state.interrupts:
        review = state.interrupts[0].value
        if "result" in review:
            results.append(SkillResult.model_validate(review["result"]))
        status = JobStatus.NEEDS_REVIEW
    else:
        status = JobStatus.SUCCEEDED
        output = spec.output.model_validate(values["output"]).model_dump(mode="json")
    return JobResult(
        job_id=job_id,
        graph=spec.name,
        status=status,
        output=output,
        review=_review_summary(review),
        approval=approval,
        usage=JobUsage.of(results, latency_s),
    )


def _review_summary(review: dict[str, Any] | None) -> dict[str, Any] | None:
    if review is None:
        return None
    if review.get("reason") == ASKED:  # a code node asked a person (`ask_human`)
        return {key: review.get(key) for key in ("step", "reason", "question", "details")} | {
            "review_errors": review.get("review_errors", [])
        }
    if review.get("reason") == "outcome_unknown":  # a tool call that may or may not have run
        return {key: review.get(key) for key in ("step", "skill", "reason", "tool", "key", "arguments", "message")} | {
            "review_errors": review.get("review_errors", [])
        }
    attempts = review["result"].get("attempts", [])
    return {
        "step": review["step"],
        "skill": review["skill"],
        "reasons": [a.get("reason") for a in attempts if not a.get("ok")],
        "last_errors": attempts[-1].get("errors", []) if attempts else [],
        "last_output": attempts[-1].get("output") if attempts else None,
        "review_errors": review.get("review_errors", []),
    }
