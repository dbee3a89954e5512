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
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.types import Command, StateSnapshot
from pydantic import BaseModel, TypeAdapter, ValidationError

from slmflow import telemetry
from slmflow.errors import InvalidInput, SlmflowError, UsageError
from slmflow.events import Event, EventSink, JobFinished, JobStarted
from slmflow.graphs import GraphSpec, JobContext, MemoryMemo, StepMemo
from slmflow.models import Endpoints
from slmflow.nodes import APPROVAL
from slmflow.outcomes import Approval, JobFailure, JobResult, JobStatus, JobUsage, Review, unanswered
from slmflow.redaction import excerpt
from slmflow.results import SkillResult
from slmflow.tools import InProcessExecutor, ToolExecutor
from slmflow.validation import job_config, json_object, validate

__all__ = ["NO_RESUME", "run_job", "validate_input"]


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


async def _invoke(
    spec: GraphSpec, graph: Any, payload: Any, config: RunnableConfig, context: JobContext, *, resumed: bool
) -> JobResult:
    job_id = context.job_id
    started = time.perf_counter()
    await context.publish(Event(kind="job_started", data=JobStarted(job_id=job_id, graph=spec.name, resumed=resumed)))
    try:
        # durability "sync": every step's checkpoint is written before the next step starts.
        await graph.ainvoke(payload, config, context=context, durability="sync")
    except UsageError:
        raise
    except SlmflowError as exc:
        result = JobResult(job_id=job_id, graph=spec.name, status=JobStatus.FAILED, error=JobFailure.of(exc))
        await context.publish(Event(kind="job_finished", data=JobFinished(status=result.status)))
        return result
    result = _result(spec, job_id, await graph.aget_state(config), time.perf_counter() - started)
    await context.publish(Event(kind="job_finished", data=JobFinished(status=result.status)))
    telemetry.record_job(spec.name, result.status, time.perf_counter() - started)
    return result


@functools.lru_cache(maxsize=64)
def _compiled(builder: StateGraph[Any, Any, Any, Any], checkpointer: BaseCheckpointSaver[str]) -> Any:
    # Compiling inspects every node's code: once per (graph, checkpointer), not once per job.
    return builder.compile(checkpointer=checkpointer)


_REVIEW: TypeAdapter[Review] = TypeAdapter(Review)
"""Reads a pause's payload as its kind of review (built once: an adapter compiles a schema)."""


def _result(spec: GraphSpec, job_id: str, state: StateSnapshot, latency_s: float) -> JobResult:
    values: dict[str, Any] = dict(state.values)
    results = [SkillResult.model_validate(r) for r in values.get("skill_results", [])]
    review: Review | None = None
    approval = output = None
    paused: dict[str, Any] = state.interrupts[0].value if state.interrupts else {}
    if "result" in paused:  # the paused run's calls and tokens count in the job's usage
        results.append(SkillResult.model_validate(paused["result"]))
    if paused.get("reason") == APPROVAL:
        approval = Approval.model_validate(paused)
        status = JobStatus.AWAITING_APPROVAL
    elif paused:
        review = unanswered(paused) if "result" in paused else _REVIEW.validate_python(paused)
        status = JobStatus.NEEDS_REVIEW
    else:
        status = JobStatus.SUCCEEDED
        output = spec.output.model_validate(values["output"]).model_dump(mode="json")
    return JobResult(job_id=job_id, graph=spec.name, status=status, output=output, review=review, approval=approval,
                     usage=JobUsage.of(results, latency_s))  # fmt: skip
