"""The SDK: submit jobs to a fleet and follow them. No project code needed on this side.

`AsyncClient` does the work; `Client` is its sync face (it runs the async client on a private
event loop thread), and `Job` likewise wraps `AsyncJob`. Inputs are validated against the JSON
Schema that the workers publish in the graph catalog, before anything is written or enqueued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kombu.exceptions import OperationalError
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from slmflow import telemetry
from slmflow.errors import (
    InvalidInput,
    JobAwaitingApproval,
    JobCancelled,
    JobFailed,
    JobNeedsReview,
    JobTimeout,
    ProjectError,
    UnknownGraph,
    UsageError,
)
from slmflow.events import Event
from slmflow.fleet.queues import publish_job, publisher
from slmflow.fleet.store import JobStore, new_job_id
from slmflow.outcomes import JobRecord, JobStatus, approval_answer, approval_message
from slmflow.settings import Settings, load_settings
from slmflow.validation import check_key, check_size, job_config, json_object, shown, validate

__all__ = ["AsyncClient", "AsyncJob", "Client", "GraphInfo", "Job"]

T = TypeVar("T")
log = logging.getLogger("slmflow.client")


class GraphInfo(BaseModel):
    """A graph some worker serves."""

    name: str
    version: str
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class AsyncJob:
    """A handle on one submitted job."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.client, self.id = client, job_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def get(self) -> JobRecord:
        """The job's whole record."""
        return await self.client.store.get(self.id)

    async def status(self) -> JobStatus:
        """Where the job is."""
        return (await self.get()).status

    async def result(self, timeout: float | None = None) -> JobRecord:
        """Wait for the job to end; its record if it succeeded, else a typed `JobError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            record = await self.get()
            if record.status == JobStatus.SUCCEEDED:
                return record
            if record.status == JobStatus.FAILED:
                error = record.error.model_dump(mode="json") if record.error else {}
                raise JobFailed(f"job {self.id} failed: {error.get('message', 'unknown error')}",
                                job_id=self.id, error=error)  # fmt: skip
            if record.status == JobStatus.CANCELLED:
                raise JobCancelled(f"job {self.id} was cancelled", job_id=self.id)
            if record.status == JobStatus.NEEDS_REVIEW:
                review = record.review.model_dump(mode="json") if record.review else {}
                raise JobNeedsReview(f"job {self.id} waits for review at step {review.get('step')!r}: answer it with "
                                     f"Job.review() or `slmflow review {self.id} --answer FILE`",
                                     job_id=self.id, review=review)  # fmt: skip
            if record.status == JobStatus.AWAITING_APPROVAL:
                approval = record.approval.model_dump(mode="json") if record.approval else {}
                raise JobAwaitingApproval(approval_message(self.id, record.approval),
                                          job_id=self.id, approval=approval)  # fmt: skip
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(f"job {self.id} is still {record.status.value} after {timeout:g}s", job_id=self.id)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def events(self, after: str = "0", *, follow: bool = True) -> AsyncIterator[Event]:
        """The job's events in order, from after event id `after`; with `follow`, until it ends."""
        async for event in self.client.store.events(self.id, after, follow=follow):
            yield event

    async def cancel(self) -> str:
        """Cancel: `cancelled` (it was queued), `cancelling` (its worker stops it) or `finished`."""
        return await self.client.store.cancel(self.id)

    async def review(self, answer: Any) -> None:
        """Answer the step a `needs_review` job waits on; the job resumes from there."""
        await self._resume(JobStatus.NEEDS_REVIEW, answer)

    async def approve(
        self, *, edit: list[dict[str, Any]] | None = None, reject: str | None = None, round: int | None = None
    ) -> None:
        """Decide on the calls an `awaiting_approval` job proposed: approve them as they are (no
        argument), approve `edit`ed calls (checked like the model's), or `reject` them with a reason
        the step's model sees on a new attempt. The job resumes; an approved call runs once. Pass the
        `round` of the proposal you saw (`record.approval.round`) so that the decision cannot
        land on a newer one; without it, it is the proposal waiting when this call reads the job."""
        record = await self.get()
        shown = record.approval.shown() if record.approval else None
        await self._resume(JobStatus.AWAITING_APPROVAL, approval_answer(edit, reject, shown, round))

    async def _resume(self, waiting: JobStatus, answer: Any) -> None:
        record = await self.get()
        if record.status != waiting:
            what = "review" if waiting == JobStatus.NEEDS_REVIEW else "approve"
            raise UsageError(f"job {self.id} is {record.status.value}, not {waiting.value}: there is nothing to {what}")
        # Queued (and active) again with the answer in the record first, then published: if the
        # publish is lost, the reconciler publishes it, and the run finds the answer in the record.
        record.status, record.review, record.approval = JobStatus.QUEUED, None, None
        record.review_answer = {"answer": answer}
        if not await self.client.store.requeue_for_review(record, waiting):
            raise UsageError(f"job {self.id} was answered by someone else meanwhile")
        await self.client.store.reset_stalls(self.id)
        self.client.enqueue(self.id, resumed=True)


class AsyncClient:
    """Submit and follow jobs (async)."""

    def __init__(self, settings: Settings | None = None, *, redis_url: str | None = None) -> None:
        self.settings = settings or load_settings(**({"redis_url": redis_url} if redis_url else {}))
        self.store = JobStore(self.settings.redis_url, self.settings.job_ttl_s,
                              reconcile_after_s=self.settings.reconcile_after_s)  # fmt: skip
        self._app = publisher(self.settings)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self.store.aclose()

    async def graphs(self) -> list[GraphInfo]:
        """The graphs live workers serve."""
        await self.store.ping()
        return [GraphInfo.model_validate(entry) for entry in (await self.store.catalog()).values()]

    async def submit(
        self,
        graph: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> AsyncJob:
        """Validate the input, record the job and enqueue it; the same key returns the first job.

        A refusal is a typed `UsageError` naming the argument (`InvalidInput`, `InputTooLarge`,
        `UnknownGraph`), raised before anything is written: the graph is a served graph's name, the
        input a JSON object its schema accepts, the key a str of 1 to SLMFLOW_MAX_KEY_CHARS printable
        characters, the metadata a JSON object; input and metadata within SLMFLOW_MAX_*_BYTES.
        `config` is the job's own values, handed to its nodes and tools (`ToolContext.config`): a
        JSON object within SLMFLOW_MAX_METADATA_BYTES, never secrets (it is stored with the job).
        """
        submission = _checked(self.settings, graph, input, idempotency_key, metadata, config=config)
        info = await self._graph(submission.graph)
        validate(info.input_schema, submission.input, graph=info.name)
        return await self._write(info, submission)

    async def submit_many(self, jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[AsyncJob]:
        """Submit (graph, input) pairs; every input is validated before any job is written."""
        pairs = _pairs(jobs)
        submissions = [_checked(self.settings, graph, data, None, None, f"jobs[{i}].input")
                       for i, (graph, data) in enumerate(pairs)]  # fmt: skip
        catalog = await self._catalog()
        infos = [self._served(s.graph, catalog) for s in submissions]
        for info, submission in zip(infos, submissions, strict=True):
            validate(info.input_schema, submission.input, graph=info.name, root=submission.field)
        return [await self._write(info, submission) for info, submission in zip(infos, submissions, strict=True)]

    async def _write(self, info: GraphInfo, submission: _Submission) -> AsyncJob:
        """Record a checked submission and enqueue it (the first write of a submit)."""
        with telemetry.submit_span(info.name) as span:
            record = JobRecord(job_id=new_job_id(), graph=info.name, graph_version=info.version, input=submission.input,
                               metadata=submission.metadata, config=submission.config,
                               idempotency_key=submission.key,
                               trace_id=telemetry.current_trace_id(), trace_context=telemetry.carrier())  # fmt: skip
            job_id, created = await self.store.create(record, submission.key)
            span.set_attribute("slmflow.job_id", job_id)
            if created:
                self.enqueue(job_id)
        return AsyncJob(self, job_id)

    async def get(self, job_id: str) -> AsyncJob:
        """A handle on an existing job (`JobNotFound` if there is none)."""
        await self.store.get(job_id)
        return AsyncJob(self, job_id)

    async def list(
        self, status: JobStatus | str | None = None, graph: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Recent jobs, newest first."""
        return await self.store.recent(JobStatus(status) if status else None, graph, limit)

    def enqueue(self, job_id: str, *, resumed: bool = False) -> None:
        """Publish `run_job` for a recorded job (a job that is already queued runs once anyway).

        The record is already written, so a failed publish loses nothing: the reconciler publishes
        an active job that has no message within SLMFLOW_RECONCILE_AFTER_S. It is logged, not raised
        (raising would tell the caller the job was refused while it is in fact accepted).
        """
        try:
            publish_job(self._app, job_id, resumed=resumed)
        except (OperationalError, RedisError, OSError) as exc:
            log.warning("job %s is recorded but its message could not be published (%s): the reconciler "
                        "publishes it within SLMFLOW_RECONCILE_AFTER_S", job_id, exc)  # fmt: skip

    async def _graph(self, name: str) -> GraphInfo:
        return self._served(name, await self._catalog())

    async def _catalog(self) -> dict[str, dict[str, Any]]:
        await self.store.ping()
        return await self.store.catalog()

    @staticmethod
    def _served(name: str, catalog: Mapping[str, dict[str, Any]]) -> GraphInfo:
        if name not in catalog:
            served = ", ".join(sorted(catalog)) or "none"
            raise UnknownGraph(
                f"no worker serves graph {shown(name)} (served now: {served}): start a jobs worker in the project "
                "that declares it, e.g. `slmflow worker --queues slmflow.jobs`",
                graph=name[:200], field="graph",
            )  # fmt: skip
        try:
            return GraphInfo.model_validate(catalog[name])
        except ValidationError as exc:
            raise ProjectError(f"the catalog entry of graph {shown(name)} is broken ({exc.error_count()} error(s)): "
                               "restart its workers to publish it again", graph=name) from None  # fmt: skip


@dataclass(frozen=True)
class _Submission:
    """One submit's arguments, checked and made plain JSON."""

    graph: str
    input: dict[str, Any]
    key: str | None
    metadata: dict[str, Any]
    field: str = "input"
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


def _checked(settings: Settings, graph: Any, data: Any, key: Any, metadata: Any, field: str = "input", *,
             config: Any = None) -> _Submission:  # fmt: skip
    """The checks of a submit that need no Redis: types, JSON, sizes (each a typed error naming the argument)."""
    if not isinstance(graph, str):
        raise InvalidInput(f"graph must be a str naming a served graph, not {type(graph).__name__} {shown(graph)}",
                           field="graph")  # fmt: skip
    plain = json_object(data, field)
    check_size(plain, field, settings.max_input_bytes, "SLMFLOW_MAX_INPUT_BYTES")
    checked_key = check_key(key, settings.max_key_chars)
    extra = json_object({} if metadata is None else metadata, "metadata")
    check_size(extra, "metadata", settings.max_metadata_bytes, "SLMFLOW_MAX_METADATA_BYTES")
    values = job_config(json_object({} if config is None else config, "config"))
    check_size(values, "config", settings.max_metadata_bytes, "SLMFLOW_MAX_METADATA_BYTES")
    return _Submission(graph, plain, checked_key, extra, field, values)


def _pairs(jobs: Any) -> list[tuple[Any, Any]]:
    """`submit_many`'s argument as (graph, input) pairs, or `InvalidInput` naming the bad item."""
    try:
        items = list(jobs)
    except TypeError:
        raise InvalidInput(f"jobs must be an iterable of (graph, input) pairs, not {type(jobs).__name__}",
                           field="jobs") from None  # fmt: skip
    for index, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InvalidInput(
                f"jobs[{index}] must be a (graph, input) pair, got {shown(item)}", field=f"jobs[{index}]"
            )
    return [(graph, data) for graph, data in items]


class _LoopThread:
    """An event loop on a daemon thread, for the sync faces."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="slmflow-client", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class Job:
    """A handle on one submitted job (sync face of `AsyncJob`)."""

    def __init__(self, job: AsyncJob, runner: _LoopThread) -> None:
        self._job, self._runner, self.id = job, runner, job.id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def get(self) -> JobRecord:
        """The job's whole record."""
        return self._runner.run(self._job.get())

    def status(self) -> JobStatus:
        """Where the job is."""
        return self._runner.run(self._job.status())

    def result(self, timeout: float | None = None) -> JobRecord:
        """Wait for the job to end; its record if it succeeded, else a typed `JobError`."""
        return self._runner.run(self._job.result(timeout))

    def events(self, after: str = "0", *, follow: bool = True) -> Iterator[Event]:
        """The job's events in order, from after event id `after`; with `follow`, until it ends."""
        stream = self._job.events(after, follow=follow)

        async def step() -> Event:
            return await anext(stream)

        while True:
            try:
                yield self._runner.run(step())
            except StopAsyncIteration:
                return

    def cancel(self) -> str:
        """Cancel: `cancelled`, `cancelling` or `finished`."""
        return self._runner.run(self._job.cancel())

    def review(self, answer: Any) -> None:
        """Answer the step a `needs_review` job waits on; the job resumes from there."""
        self._runner.run(self._job.review(answer))

    def approve(
        self, *, edit: list[dict[str, Any]] | None = None, reject: str | None = None, round: int | None = None
    ) -> None:
        """Approve, edit or reject the calls an `awaiting_approval` job proposed (see `AsyncJob.approve`)."""
        self._runner.run(self._job.approve(edit=edit, reject=reject, round=round))


class Client:
    """Submit and follow jobs (sync face of `AsyncClient`)."""

    def __init__(self, settings: Settings | None = None, *, redis_url: str | None = None) -> None:
        self._runner = _LoopThread()
        self._client = self._runner.run(_make(settings, redis_url))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections."""
        self._runner.run(self._client.aclose())

    def graphs(self) -> list[GraphInfo]:
        """The graphs live workers serve."""
        return self._runner.run(self._client.graphs())

    def submit(self, graph: str, input: Mapping[str, Any], idempotency_key: str | None = None,
               metadata: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> Job:  # fmt: skip
        """Validate the input, record the job and enqueue it; the same key returns the first job."""
        job = self._runner.run(self._client.submit(graph, input, idempotency_key, metadata, config))
        return Job(job, self._runner)

    def submit_many(self, jobs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Job]:
        """Submit (graph, input) pairs; every input is validated before any job is written."""
        return [Job(j, self._runner) for j in self._runner.run(self._client.submit_many(jobs))]

    def get(self, job_id: str) -> Job:
        """A handle on an existing job."""
        return Job(self._runner.run(self._client.get(job_id)), self._runner)

    def list(self, status: JobStatus | str | None = None, graph: str | None = None, limit: int = 50) -> list[JobRecord]:
        """Recent jobs, newest first."""
        return self._runner.run(self._client.list(status, graph, limit))


async def _make(settings: Settings | None, redis_url: str | None) -> AsyncClient:
    # Built on the loop thread: its Redis pool belongs to that loop.
    return AsyncClient(settings, redis_url=redis_url)
