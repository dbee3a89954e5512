"""A jobs worker process's runtime: one asyncio loop shared by every job task of the process.

Celery runs `run_job` tasks on the threads pool; each task hands its job to this loop and waits,
so a process holds hundreds of jobs whose model and tool I/O interleave on one loop. Around each
run: a lease with a fencing token, renewed by one heartbeat for all the process's jobs (a lapsed
lease means the worker died, and the reconciler hands the job on); a stall counter (dead-letter a
job whose runs keep dying without progress); checkpoints fenced by the lease; store faults that
give the job back instead of failing it; and a bounded drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import redis
from celery import Celery
from langgraph.checkpoint.base import BaseCheckpointSaver

from slmflow.checkpoints import open_checkpointer
from slmflow.connect import open_endpoints
from slmflow.errors import InvalidInput, JobFailed, StoreUnavailable
from slmflow.events import Event, JobFinished, JobStarted
from slmflow.fleet.calls import JobCalls
from slmflow.fleet.executor import CeleryToolExecutor
from slmflow.fleet.fencing import fenced, on_checkpoint, open_fenced_postgres
from slmflow.fleet.queues import publish_job
from slmflow.fleet.reconciler import Reconciler
from slmflow.fleet.store import CancelSignal, Heartbeat, JobStore, LeaseLost, current_lease
from slmflow.graphs import GraphSpec
from slmflow.jobs import NO_RESUME, run_job
from slmflow.outcomes import JobFailure, JobRecord, JobResult, JobStatus
from slmflow.project import find_project
from slmflow.settings import Settings
from slmflow.telemetry import setup_metrics, setup_tracing

__all__ = ["TRANSIENT", "JobsRuntime", "catalog_entry"]

log = logging.getLogger("slmflow.worker")
T = TypeVar("T")
CATALOG_TTL_S = 45
LOOP_STALL_S = 30.0
"""A jobs loop that has not answered the heartbeat thread for this long is wedged: leases lapse."""

TRANSIENT: tuple[type[BaseException], ...] = (
    StoreUnavailable, redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError, psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
)  # fmt: skip
"""Faults of the stores, not of the job: the run stops, the job is given back and resumes later."""


def catalog_entry(spec: GraphSpec) -> dict[str, Any]:
    """What the catalog says about a graph: enough for the SDK to validate inputs."""
    return {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "input_schema": spec.input.model_json_schema(),
        "output_schema": spec.output.model_json_schema(),
    }


class _HandBack(Exception):  # noqa: N818 - a signal: this run stops, the job goes on elsewhere
    """The run stops without ending the job: `reason` says why (drain, store fault)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Held:
    token: int
    task: asyncio.Task[Any]
    stop: list[str] = field(default_factory=list)
    progressed: bool = False


class JobsRuntime:
    """The per-process engine of a jobs worker (see `slmflow.fleet.process` for the one instance)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.settings: Settings = app.conf.slmflow_settings
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.draining = False
        self.slots = 0
        """The worker's slots (set when it is ready), published with its heartbeat for the autoscaler."""
        self.observers: list[Callable[[Event], None]] = []
        """Called with every event a job of this process emits (the worker's metrics count them)."""
        self._held: dict[str, _Held] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="slmflow-jobs-loop", daemon=True).start()
        self._stack = AsyncExitStack()
        self._call(self._start())

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        setup_tracing("slmflow-jobs-worker", capture=self.settings.capture_content)
        setup_metrics("slmflow-jobs-worker")
        settings = self.settings
        self.graphs = find_project(settings.project).load_all()
        self.store = JobStore(settings.redis_url, settings.job_ttl_s, reconcile_after_s=settings.reconcile_after_s,
                              max_event_bytes=settings.max_event_bytes)  # fmt: skip
        await self.store.ping()
        self.calls = JobCalls(self.store.redis, settings.job_ttl_s)
        self.endpoints = await self._stack.enter_async_context(
            open_endpoints(settings, learning=True, start_local=False, check=False)
        )
        self.checkpointer = fenced(await self._stack.enter_async_context(_checkpointer(settings.checkpoint_url)),
                                   self.store)  # fmt: skip
        self.reconciler = Reconciler(self.app, self.store)
        self._background = [
            asyncio.create_task(self._publish_catalog()),
            asyncio.create_task(self.reconciler.run_forever()),
        ]
        self._pong = time.monotonic()
        threading.Thread(target=self._heartbeat, args=(Heartbeat(settings.redis_url),), name="slmflow-heartbeat",
                         daemon=True).start()  # fmt: skip
        await self.store.publish_graphs([catalog_entry(s) for s in self.graphs.values()], CATALOG_TTL_S)

    def run(self, job_id: str, resume: Any = NO_RESUME) -> None:
        """Run one job (blocks the calling task thread until the run ends, pauses or hands the job back)."""
        self._call(self._run(job_id, resume), timeout=self.settings.job_timeout_s + 30)

    def drain(self) -> None:
        """Shutdown began: finish what can be finished within `SLMFLOW_DRAIN_S`, then hand the rest back."""
        self.loop.call_soon_threadsafe(lambda: self._background.append(asyncio.ensure_future(self._drain())))

    async def _drain(self) -> None:
        self.draining = True
        deadline = self.loop.time() + self.settings.drain_s
        while self._held and self.loop.time() < deadline:
            await asyncio.sleep(0.1)
        for held in list(self._held.values()):
            held.stop.append("drain")
            held.task.cancel()

    async def _run(self, job_id: str, resume: Any) -> None:
        try:
            token = await self.store.acquire_lease(job_id, self.settings.lease_ttl_s)
        except TRANSIENT as exc:
            log.warning("job %s: cannot take its lease (%s); the reconciler will hand it on", job_id, exc)
            return
        if token is None:
            return  # held by another run, or nothing to run (ended, paused, unknown: a forged message)
        if self.draining:
            await self._hand_back(job_id, token, "drain")
            return
        task = asyncio.current_task()
        assert task is not None
        # Renewed from the moment it is taken: claiming a thread can wait on a busy Postgres pool.
        held = self._held[job_id] = _Held(token, task)
        try:
            await self._run_leased(job_id, held, resume)
        except asyncio.CancelledError:
            if not held.stop:
                raise
            task.uncancel()  # stopped by the heartbeat before the run began: the next run sees why
            log.warning("job %s: stopped before it ran (%s)", job_id, held.stop[0])
        except _HandBack as signal:
            await self._hand_back(job_id, token, signal.reason)
        except LeaseLost as lost:
            log.warning("job %s: lease lost (%s), another worker took it over; stopping", job_id,
                        lost.args[1] if len(lost.args) > 1 else "?")  # fmt: skip
            await self._quietly(self.store.release_lease(job_id, token))
        except CancelSignal:
            log.info("job %s was cancelled before it started", job_id)
            await self._quietly(self.store.release_lease(job_id, token))
        except TRANSIENT as exc:
            await self._hand_back(job_id, token, f"store fault: {exc}")
        else:
            await self._quietly(self.store.release_lease(job_id, token))
        finally:
            self._held.pop(job_id, None)

    async def _hand_back(self, job_id: str, token: int, reason: str) -> None:
        """Let the lease go and publish the job to the resume queue (the reconciler covers a failure)."""
        log.warning("job %s: handed back (%s)", job_id, reason)
        await self._quietly(self.store.release_lease(job_id, token, check_after_s=1.0))
        await self._quietly(asyncio.to_thread(publish_job, self.app, job_id, resumed=True))

    async def _quietly(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:  # the store is down: the lease lapses and the reconciler takes over
            log.warning("%s", exc)

    async def _run_leased(self, job_id: str, held: _Held, resume: Any) -> None:
        stalls = await self.store.count_stall(job_id)
        try:
            await self._run_counted(job_id, held, resume, stalls)
        finally:
            if not held.progressed:
                # This run ends here, not by its worker dying: it is not a stall (only vanished runs count).
                await self._quietly(self.store.uncount_stall(job_id))

    async def _run_counted(self, job_id: str, held: _Held, resume: Any, stalls: int) -> None:
        store, settings, token = self.store, self.settings, held.token
        record = await store.get(job_id)
        record.attempts += 1
        if stalls > settings.max_job_attempts:
            error = JobFailed(
                f"dead-lettered: {stalls - 1} runs in a row died without progress "
                f"(SLMFLOW_MAX_JOB_ATTEMPTS={settings.max_job_attempts})",
                job_id=record.job_id,
            )
            await self._finish(record, token, JobStatus.FAILED, error=JobFailure.of(error))
            return
        await self.checkpointer.claim(job_id, token)
        if resume is NO_RESUME and record.review_answer is not None:
            resume = record.review_answer["answer"]
        record.status, record.started_at = JobStatus.RUNNING, record.started_at or _now()
        await store.fenced_put(record, token)
        try:
            async with self._holding(record.job_id, held):
                result = await self._execute(record, token, resume, held)
        except _Ended as ended:
            await self._finish(record, token, ended.status, error=ended.error)
            return
        record.usage = result.usage
        record.trace_id = record.trace_id or result.trace_id
        await self._finish(record, token, result.status, emitted=True, output=result.output, error=result.error,
                           review=result.review, approval=result.approval)  # fmt: skip

    @asynccontextmanager
    async def _holding(self, job_id: str, held: _Held) -> AsyncIterator[None]:
        """While the run lasts: lease in context, deadline, stop signals turned into outcomes."""
        task = held.task
        lease = current_lease.set((job_id, held.token))
        progress = on_checkpoint.set(lambda: self._progressed(job_id, held))
        try:
            async with asyncio.timeout(self.settings.job_timeout_s):
                yield
        except asyncio.CancelledError:
            if not held.stop:
                raise
            task.uncancel()  # our own heartbeat or drain stopped the job: say why
            reason = held.stop[0]
            if reason == "cancelled":
                raise _Ended(JobStatus.CANCELLED) from None
            if reason == "drain":
                raise _HandBack("drain") from None
            raise LeaseLost(job_id, f"heartbeat: {reason}") from None
        except TimeoutError:
            error = JobFailed(f"the job ran past SLMFLOW_JOB_TIMEOUT_S={self.settings.job_timeout_s:g}s", job_id=job_id)
            raise _Ended(JobStatus.FAILED, JobFailure.of(error)) from None
        except InvalidInput as exc:  # the worker's own check of the input (stricter than the SDK's, never laxer)
            raise _Ended(JobStatus.FAILED, JobFailure.of(exc)) from None
        except _PASS_THROUGH:
            raise
        except Exception as exc:  # a bug in a graph or in slmflow: the job must still end, not hang `running`
            log.exception("job %s crashed", job_id)
            error = JobFailed(f"the job crashed: {type(exc).__name__}: {exc}", job_id=job_id)
            raise _Ended(JobStatus.FAILED, JobFailure.of(error)) from None
        finally:
            current_lease.reset(lease)
            on_checkpoint.reset(progress)

    async def _progressed(self, job_id: str, held: _Held) -> None:
        if not held.progressed:
            held.progressed = True
            await self.store.reset_stalls(job_id)

    async def _execute(self, record: JobRecord, token: int, resume: Any, held: _Held) -> JobResult:
        spec = self.graphs.get(record.graph)
        if spec is None:
            raise _Ended(JobStatus.FAILED, JobFailure.of(JobFailed(f"this worker does not serve graph {record.graph!r}",
                                                                   job_id=record.job_id)))  # fmt: skip

        async def emit(event: Event) -> None:
            if isinstance(event.data, JobStarted):
                event = event.model_copy(update={"data": event.data.model_copy(update={"worker": self.worker})})
            await self.store.append_event(record.job_id, event, token)
            for observe in self.observers:
                observe(event)

        return await run_job(
            spec,
            record.input,
            endpoints=self.endpoints,
            checkpointer=self.checkpointer,
            job_id=record.job_id,
            executor=CeleryToolExecutor(self.app, self.calls, self.settings, emit),
            emit=emit,
            memo=RedisMemo(self.store, record.job_id),
            resume=resume,
            trace_parent=record.trace_context or None,
            config=record.config,
        )

    async def _finish(self, record: JobRecord, token: int, status: JobStatus, *, emitted: bool = False,
                      **fields: Any) -> None:  # fmt: skip
        """Record how the job ended (or paused); every ending emits `job_finished` once."""
        for name, value in fields.items():
            setattr(record, name, value)
        record.status, record.review_answer = status, None
        record.finished_at = None if status in (JobStatus.NEEDS_REVIEW, JobStatus.AWAITING_APPROVAL) else _now()
        await self.store.fenced_put(record, token)
        if not emitted:
            finished = Event(kind="job_finished", data=JobFinished(status=status))
            await self.store.append_event(record.job_id, finished, token)

    def _heartbeat(self, beat: Heartbeat) -> None:
        """Renew the leases of every job this process runs, one round trip a beat, from its own thread.

        A loop busy with hundreds of resuming jobs must not lose their leases; a loop that stopped
        answering for `LOOP_STALL_S` (wedged, not busy) lets them lapse, so the jobs move on.
        """
        every = min(self.settings.lease_ttl_s / 3, 1.0)
        while True:
            time.sleep(every)
            self.loop.call_soon_threadsafe(self._answer)
            wedged = time.monotonic() - self._pong > LOOP_STALL_S
            if self.slots and not wedged and not self.draining:
                try:  # the autoscaler counts the slots of live workers only
                    beat.announce(self.worker, self.slots, len(self._held), max(3 * every, 5.0))
                except Exception as exc:
                    log.warning("worker announce failed: %s", exc)
            if not self._held or wedged:
                continue
            try:
                held = dict(self._held)
                stops = beat.beat({job_id: h.token for job_id, h in held.items()}, self.settings.lease_ttl_s)
            except Exception as exc:  # the store is down: leases may lapse; fencing keeps us honest
                log.warning("heartbeat failed: %s", exc)
                continue
            for job_id, reason in stops.items():
                self.loop.call_soon_threadsafe(self._stop, held[job_id], reason)

    def _answer(self) -> None:
        self._pong = time.monotonic()

    def answered_at(self) -> float:
        """When the event loop last answered the heartbeat thread (monotonic seconds)."""
        return self._pong

    @staticmethod
    def _stop(held: _Held, reason: str) -> None:
        held.stop.append(reason)
        held.task.cancel()

    async def _publish_catalog(self) -> None:
        entries = [catalog_entry(s) for s in self.graphs.values()]
        while True:
            await asyncio.sleep(CATALOG_TTL_S / 3)
            try:
                await self.store.publish_graphs(entries, CATALOG_TTL_S)
            except Exception as exc:
                log.warning("catalog refresh failed: %s", exc)


class _Ended(Exception):  # noqa: N818 - a signal: the run decided how the job ends
    def __init__(self, status: JobStatus, error: JobFailure | None = None) -> None:
        super().__init__(status)
        self.status, self.error = status, error


_PASS_THROUGH: tuple[type[BaseException], ...] = (_Ended, _HandBack, LeaseLost, CancelSignal, *TRANSIENT)
"""What a run lets through as it is: its own signals, and store faults (the job is given back)."""


@asynccontextmanager
async def _checkpointer(url: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    if url.startswith(("postgresql://", "postgres://")):
        async with open_fenced_postgres(url, 50) as saver:
            yield saver
    else:
        async with open_checkpointer(url, 50) as saver:
            yield saver


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


def _now() -> datetime:
    return datetime.now(UTC)
