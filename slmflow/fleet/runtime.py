"""A jobs worker process's runtime: one asyncio loop shared by every job task of the process.

Celery runs `run_job` tasks on the threads pool; each task hands its job to this loop and waits,
so a process holds hundreds of jobs whose model and tool I/O interleave on one loop. Around each
job: a lease with a fencing token, renewed by heartbeat (a lapsed lease means the worker died);
an attempt counter (dead-letter after `max_job_attempts`); a sweeper that re-enqueues jobs whose
lease lapsed, so a SIGKILLed worker's jobs resume within seconds instead of after the broker's
visibility timeout; and checkpoints that refuse writes once the lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from celery import Celery
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from slmflow.checkpoints import open_checkpointer
from slmflow.errors import JobFailed, SlmflowError
from slmflow.events import Event
from slmflow.fleet.app import enqueue_job
from slmflow.fleet.executor import CeleryToolExecutor
from slmflow.fleet.records import TERMINAL, JobRecord
from slmflow.fleet.store import CancelSignal, JobStore, LeaseLost
from slmflow.graphs import GraphSpec
from slmflow.jobs import NO_RESUME, JobResult, JobStatus, run_job
from slmflow.models import Endpoints
from slmflow.project import find_project
from slmflow.settings import Settings
from slmflow.telemetry import setup_metrics, setup_tracing

__all__ = ["JobsRuntime", "catalog_entry"]

log = logging.getLogger("slmflow.worker")
T = TypeVar("T")
CATALOG_TTL_S = 45
SWEEP_EVERY_S = 2.0


def catalog_entry(spec: GraphSpec) -> dict[str, Any]:
    """What the catalog says about a graph: enough for the SDK to validate inputs."""
    return {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "input_schema": spec.input.model_json_schema(),
        "output_schema": spec.output.model_json_schema(),
    }


class JobsRuntime:
    """The per-process engine of a jobs worker (created on the first task, or at worker start)."""

    _instance: ClassVar[JobsRuntime | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, app: Celery) -> JobsRuntime:
        """This process's runtime for `app`."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(app)
            return cls._instance

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.settings: Settings = app.conf.slmflow_settings
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="slmflow-jobs-loop", daemon=True).start()
        self._stack = AsyncExitStack()
        self._call(self._start())

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        setup_tracing("slmflow-jobs-worker")
        setup_metrics("slmflow-jobs-worker")
        settings = self.settings
        self.graphs = find_project(settings.project).load_all()
        self.store = JobStore(settings.redis_url, settings.job_ttl_s)
        await self.store.ping()
        self.endpoints = Endpoints.from_settings(settings)
        self.checkpointer = await self._stack.enter_async_context(open_checkpointer(settings.checkpoint_url, 50))
        self._held: dict[str, _Held] = {}
        self.fenced_checkpointer = FencedCheckpointer(self.checkpointer, self.store)
        self._background = [
            asyncio.create_task(self._publish_catalog()),
            asyncio.create_task(self._sweep()),
            asyncio.create_task(self._heartbeat()),
        ]
        await self.store.publish_graphs([catalog_entry(s) for s in self.graphs.values()], CATALOG_TTL_S)

    def run(self, job_id: str, resume: Any = NO_RESUME) -> None:
        """Run one job (blocks the calling task thread until the job ends, pauses or moves on)."""
        self._call(self._run(job_id, resume), timeout=self.settings.job_timeout_s + 30)

    async def _run(self, job_id: str, resume: Any) -> None:
        record = await self.store.get(job_id)
        if record.status in TERMINAL or (record.status == JobStatus.NEEDS_REVIEW and resume is NO_RESUME):
            return  # a duplicate delivery of a job that already ended or waits for review
        token = await self.store.acquire_lease(job_id, self.settings.lease_ttl_s)
        if token is None:
            return  # another worker holds it; if that worker dies, the sweeper hands it on
        try:
            await self._run_leased(record, token, resume)
        except LeaseLost:
            log.warning("job %s: lease lost, another worker took it over; stopping", job_id)
        except CancelSignal:
            log.info("job %s was cancelled before it started", job_id)
        finally:
            await self.store.release_lease(job_id, token)

    async def _run_leased(self, record: JobRecord, token: int, resume: Any) -> None:
        store, settings = self.store, self.settings
        record.attempts = await store.count_attempt(record.id)
        if record.attempts > settings.max_job_attempts:
            error = JobFailed(
                f"dead-lettered: the job's worker was lost {record.attempts - 1} times "
                f"(SLMFLOW_MAX_JOB_ATTEMPTS={settings.max_job_attempts})",
                job_id=record.id,
            )
            await self._finish(record, token, JobStatus.FAILED, error=error.to_dict())
            return
        record.status, record.started_at = JobStatus.RUNNING, record.started_at or _now()
        await store.fenced_put(record, token)
        job = asyncio.current_task()
        assert job is not None
        stop_reason: list[str] = []
        self._held[record.id] = _Held(token, job, stop_reason)
        _lease.set((record.id, token))
        try:
            async with asyncio.timeout(settings.job_timeout_s):
                result = await self._execute(record, token, resume)
        except asyncio.CancelledError:
            if not stop_reason:
                raise
            job.uncancel()  # our own heartbeat stopped the job: this task goes on to record why
            if stop_reason[0] == "cancelled":
                await self._finish(record, token, JobStatus.CANCELLED)
                return
            raise LeaseLost(record.id) from None
        except TimeoutError:
            error = JobFailed(f"the job ran past SLMFLOW_JOB_TIMEOUT_S={settings.job_timeout_s:g}s", job_id=record.id)
            await self._finish(record, token, JobStatus.FAILED, error=error.to_dict())
            return
        except (LeaseLost, CancelSignal):
            raise
        except Exception as exc:  # a bug in a graph or in slmflow: the job must still end, not hang `running`
            log.exception("job %s crashed", record.id)
            error = JobFailed(f"the job crashed: {type(exc).__name__}: {exc}", job_id=record.id)
            await self._finish(record, token, JobStatus.FAILED, error=error.to_dict())
            return
        finally:
            self._held.pop(record.id, None)
        record.usage = result.usage
        record.trace_id = record.trace_id or result.trace_id
        await self._finish(record, token, result.status, output=result.output, error=result.error, review=result.review)

    async def _execute(self, record: JobRecord, token: int, resume: Any) -> JobResult:
        spec = self.graphs.get(record.graph)
        if spec is None:
            raise JobFailed(f"this worker does not serve graph {record.graph!r}", job_id=record.id)

        async def emit(event: Event) -> None:
            await self.store.append_event(record.id, event, token)

        return await run_job(
            spec,
            record.input,
            endpoints=self.endpoints,
            checkpointer=self.fenced_checkpointer,
            job_id=record.id,
            executor=CeleryToolExecutor(self.app, self.store, self.settings, emit),
            emit=emit,
            memo=RedisMemo(self.store, record.id),
            resume=resume,
            trace_parent=record.trace_context or None,
        )

    async def _finish(self, record: JobRecord, token: int, status: JobStatus, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(record, name, value)
        record.status, record.finished_at = status, _now()
        await self.store.fenced_put(record, token)
        if status == JobStatus.CANCELLED:
            await self.store.append_event(record.id, Event(kind="job_finished", data={"status": status}), token)

    async def _heartbeat(self) -> None:
        """Renew the leases of every job this process runs, in one round trip a beat."""
        while True:
            await asyncio.sleep(min(self.settings.lease_ttl_s / 3, 1.0))
            if not self._held:
                continue
            with _logged("heartbeat"):
                held = dict(self._held)
                stops = await self.store.heartbeat({job_id: h.token for job_id, h in held.items()},
                                                   self.settings.lease_ttl_s)  # fmt: skip
                for job_id, reason in stops.items():
                    held[job_id].stop.append(reason)
                    held[job_id].task.cancel()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            with _logged("sweep"):
                for job_id in await self.store.lapsed_leases():
                    if await self.store.claim_takeover(job_id):
                        log.warning("job %s: its worker stopped renewing the lease; re-enqueuing", job_id)
                        enqueue_job(self.app, job_id)

    async def _publish_catalog(self) -> None:
        entries = [catalog_entry(s) for s in self.graphs.values()]
        while True:
            await asyncio.sleep(CATALOG_TTL_S / 3)
            with _logged("catalog"):
                await self.store.publish_graphs(entries, CATALOG_TTL_S)


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except (SlmflowError, OSError, ConnectionError) as exc:  # keep the loop alive; try again later
        log.warning("%s failed: %s", what, exc)


class RedisMemo:
    """A job's step memo in the job store."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    async def recall(self, step: str) -> dict[str, Any] | None:
        """The remembered result of `step`, if any."""
        return await self.store.memo(self.job_id, step)

    async def remember(self, step: str, result: dict[str, Any]) -> None:
        """Remember the result of `step`."""
        await self.store.remember(self.job_id, step, result)


_lease: ContextVar[tuple[str, int] | None] = ContextVar("slmflow_lease", default=None)
"""The (job id, fencing token) of the job the current task runs; graph tasks inherit it."""


@dataclass
class _Held:
    token: int
    task: asyncio.Task[Any]
    stop: list[str]


class FencedCheckpointer(BaseCheckpointSaver[str]):
    """Writes checkpoints only while the running job's lease is still held (else `LeaseLost`).

    One instance serves every job of the process (so each graph compiles once): the job comes from
    the `_lease` context variable set by the task that runs it.
    """

    def __init__(self, inner: BaseCheckpointSaver[str], store: JobStore) -> None:
        super().__init__(serde=inner.serde)
        self.inner, self.store = inner, store

    async def check(self) -> None:
        """Raise `LeaseLost` unless the current job still holds its lease."""
        lease = _lease.get()
        if lease is None or not await self.store.holds_lease(*lease):
            raise LeaseLost(lease[0] if lease else "?")

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(self, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        async for item in self.inner.alist(config, **kwargs):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self.check()
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self.check()
        await self.inner.aput_writes(config, writes, task_id, task_path)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.inner.get_next_version(current, channel)


def _now() -> datetime:
    return datetime.now(UTC)
