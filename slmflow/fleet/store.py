"""The job store on Redis: records, events, idempotency, leases, the active set, memo, catalog.

The key schema is in `slmflow.fleet.keys`, the atomic steps in `slmflow.fleet.lua`; tool call
records are in `slmflow.fleet.calls`. Every write a worker makes to a job it runs is fenced: it
lands only while the worker's lease token is still the job's current one, so a worker that lost
its lease (it stalled, its lease lapsed, another took over) can no longer change the job.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slmflow.errors import IdempotencyConflict, JobNotFound, StoreUnavailable
from slmflow.events import Event, Truncated
from slmflow.fleet import keys, lua
from slmflow.outcomes import TERMINAL, JobRecord, JobStatus
from slmflow.redaction import mask_url

__all__ = [
    "CancelSignal",
    "Heartbeat",
    "JobStore",
    "LeaseLost",
    "current_lease",
    "fingerprint",
    "new_job_id",
    "redis_client",
]

SETTLED = TERMINAL | {JobStatus.NEEDS_REVIEW, JobStatus.AWAITING_APPROVAL}
"""Statuses outside the fleet's invariant: nothing runs, nothing needs a message."""


class LeaseLost(Exception):  # noqa: N818 - a signal, not an error: the worker stops quietly
    """This worker no longer holds the job's lease: another took it over. Stop writing."""


class CancelSignal(Exception):  # noqa: N818 - a signal: the job was cancelled, stop running it
    """Someone cancelled the job; the worker stops it and records `cancelled`."""


current_lease: ContextVar[tuple[str, int] | None] = ContextVar("slmflow_lease", default=None)
"""The (job id, fencing token) of the job the current task runs; graph tasks inherit it."""


def redis_client(url: str, max_connections: int = 1000) -> aioredis.Redis:
    """An async Redis client that reconnects with backoff (a restart costs a retry, not a job)."""
    return aioredis.Redis.from_url(
        url, decode_responses=True, max_connections=max_connections, socket_connect_timeout=2, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 4), retry_on_error=[RedisConnectionError],
        health_check_interval=15,
    )  # fmt: skip


class Heartbeat:
    """Lease renewal from a thread of its own (sync client): a busy event loop cannot starve it."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
        self._renew = self.redis.register_script(lua.RENEW)
        self._worker = self.redis.register_script(lua.WORKER_BEAT)

    def announce(self, name: str, slots: int, running: int, ttl_s: float) -> None:
        """Say this jobs worker is alive with `slots` (the autoscaler's denominator), for `ttl_s`."""
        host, _, pid = name.rpartition(":")
        ttl = int(ttl_s * 1000)
        self._worker(keys=[keys.WORKERS, keys.worker(name)], args=[name, int(time.time() * 1000) + ttl, ttl, slots,
                                                                     running, host, pid])  # fmt: skip

    def beat(self, leases: dict[str, int], ttl_s: float) -> dict[str, str]:
        """Renew many leases in one round trip; returns `cancelled` or `lease_lost` for jobs to stop."""
        check_after = _ms(ttl_s)
        pipe = self.redis.pipeline(transaction=False)
        for job_id, token in leases.items():
            self._renew(keys=[keys.lease(job_id), keys.ACTIVE], args=[token, int(ttl_s * 1000), check_after, job_id],
                        client=pipe)  # fmt: skip
            pipe.exists(keys.cancel(job_id))
        replies = pipe.execute()
        stop = {}
        for index, job_id in enumerate(leases):
            renewed, cancel = replies[2 * index], replies[2 * index + 1]
            if cancel:
                stop[job_id] = "cancelled"
            elif not renewed:
                stop[job_id] = "lease_lost"
        return stop


def fingerprint(graph: str, data: Any) -> str:
    """What an idempotency key promises: the same graph with the same input."""
    canonical = json.dumps([graph, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _record(status: str | None, data: str, cancelled_at: str | None) -> JobRecord:
    record = JobRecord.model_validate_json(data)
    if status and status != record.status:
        record.status = JobStatus(status)
        if cancelled_at:
            record.finished_at = datetime.fromisoformat(cancelled_at)
    return record


def _now() -> float:
    return time.time()


def _ms(seconds_from_now: float = 0.0) -> int:
    return int((time.time() + seconds_from_now) * 1000)


class JobStore:
    """Async access to the fleet's Redis keys (one instance per process and event loop)."""

    def __init__(self, url: str, ttl_s: int = 7 * 24 * 3600, *, reconcile_after_s: float = 10.0,
                 max_event_bytes: int = 64 * 1024) -> None:  # fmt: skip
        self.redis: aioredis.Redis = redis_client(url)
        self.url, self.ttl = url, ttl_s
        self.reconcile_after_s, self.max_event_bytes = reconcile_after_s, max_event_bytes
        script = self.redis.register_script
        self._create, self._fenced_put, self._requeue = script(lua.CREATE), script(lua.FENCED_PUT), script(lua.REQUEUE)
        self._fenced_xadd, self._renew, self._acquire = script(lua.FENCED_XADD), script(lua.RENEW), script(lua.ACQUIRE)
        self._release, self._cancel, self._elect = script(lua.RELEASE), script(lua.CANCEL), script(lua.ELECT)
        self._check, self._claim = script(lua.RECONCILE_CHECK), script(lua.RECONCILE_CLAIM)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def ping(self) -> None:
        """Fail with a clear error (`EndpointUnreachable`) when Redis does not answer."""
        await self.redis.ping()

    # -- records -------------------------------------------------------------------------------

    async def create(self, record: JobRecord, idempotency_key: str | None) -> tuple[str, bool]:
        """Store a new record (`queued`, active); with a key already used, nothing is written.

        Returns (job id, created). A key that names a job of another graph or input is an
        `IdempotencyConflict`: the key promised the same job, and this is not it.
        """
        mark = fingerprint(record.graph, record.input)
        value = await self._create(
            keys=[keys.idem(idempotency_key or "-"), keys.job(record.job_id), keys.JOBS, keys.ACTIVE],
            args=[record.job_id, record.model_dump_json(), self.ttl, record.created_at.timestamp(), mark,
                  _ms(self.reconcile_after_s), "1" if idempotency_key else "0"],
        )  # fmt: skip
        job_id, _, first_mark = str(value).partition("|")
        if job_id != record.job_id and first_mark != mark:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} already names job {job_id} with another graph or input: "
                "use a new key for a new job, or the same input to get the first job back",
                job_id=job_id,
            )
        return job_id, job_id == record.job_id

    async def get(self, job_id: str) -> JobRecord:
        """The job's record, or `JobNotFound`."""
        status, data, cancelled_at = cast(
            "list[str | None]", await self.redis.hmget(keys.job(job_id), ["status", "data", "cancelled_at"])
        )
        if data is None:
            raise JobNotFound(f"no job {job_id!r} (expired after SLMFLOW_JOB_TTL_S, or never submitted)", job_id=job_id)
        return _record(status, data, cancelled_at)

    async def fenced_put(self, record: JobRecord, token: int) -> None:
        """Overwrite a record while holding its lease: `LeaseLost` if not, `CancelSignal` if cancelled.

        A record that ended or paused leaves the active set in the same step.
        """
        done = await self._fenced_put(
            keys=[keys.lease(record.job_id), keys.job(record.job_id), keys.ACTIVE],
            args=[token, record.status.value, record.model_dump_json(), record.job_id,
                  "1" if record.status in SETTLED else "0"],
        )  # fmt: skip
        if done == 0:
            raise LeaseLost(record.job_id, "record write")
        if done == -1:
            raise CancelSignal(record.job_id)

    async def requeue_for_review(self, record: JobRecord, waiting: JobStatus = JobStatus.NEEDS_REVIEW) -> bool:
        """Store `record` as queued (and active) again if the job is still `waiting` (for a review or
        an approval)."""
        done = await self._requeue(
            keys=[keys.job(record.job_id), keys.ACTIVE],
            args=[waiting.value, record.model_dump_json(), record.job_id, _ms(self.reconcile_after_s)],
        )
        return bool(done)

    async def recent(
        self, status: JobStatus | None = None, graph: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """The newest jobs first, filtered by status and graph."""
        found: list[JobRecord] = []
        start = 0
        while len(found) < limit:
            ids = cast("list[str]", await self.redis.zrevrange(keys.JOBS, start, start + 199))
            if not ids:
                break
            start += len(ids)
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(keys.job(job_id), ["status", "data", "cancelled_at"])
                rows = cast("list[list[str | None]]", await pipe.execute())
            for status_, data, cancelled_at in rows:
                if data is None:
                    continue
                record = _record(status_, data, cancelled_at)
                if (status is None or record.status == status) and (graph is None or record.graph == graph):
                    found.append(record)
        return found[:limit]

    async def cancel(self, job_id: str) -> str:
        """`cancelled` (was queued or paused), `cancelling` (running: its worker stops it) or `finished`."""
        outcome = await self._cancel(keys=[keys.job(job_id), keys.cancel(job_id), keys.ACTIVE],
                                     args=[_iso_now(), self.ttl, job_id])  # fmt: skip
        if outcome == -1:
            raise JobNotFound(f"no job {job_id!r}", job_id=job_id)
        return {1: "cancelled", 2: "cancelling", 0: "finished"}[int(outcome)]

    # -- events --------------------------------------------------------------------------------

    async def append_event(self, job_id: str, event: Event, token: int | None = None) -> None:
        """Append to the job's stream (fenced when a worker passes its lease token).

        An event over `max_event_bytes` keeps its kind and step; its data says it was cut.
        """
        body = event.model_dump_json()
        if len(body.encode()) > self.max_event_bytes:
            body = event.model_copy(update={"data": Truncated(bytes=len(body.encode()))}).model_dump_json()
        key = keys.events(job_id)
        if token is None:
            await self.redis.xadd(key, {"event": body})
            await self.redis.expire(key, self.ttl)
            return
        done = await self._fenced_xadd(keys=[keys.lease(job_id), key], args=[token, body, self.ttl])
        if not done:
            raise LeaseLost(job_id, "event")

    async def events(
        self, job_id: str, after: str = "0", *, follow: bool = False, block_ms: int = 1000
    ) -> AsyncIterator[Event]:
        """Events after stream id `after`; with `follow`, waits for more until the job finishes."""
        key = keys.events(job_id)
        while True:
            batch = cast(
                "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
                await self.redis.xread({key: after}, count=500, block=block_ms if follow else None),
            )
            entries = batch[0][1] if batch else []
            for event_id, fields in entries:
                after = event_id
                event = Event.model_validate_json(fields["event"]).model_copy(update={"id": event_id})
                yield event
                # A paused job also finishes a run; follow on if a later run (after review) went on.
                if follow and event.kind == "job_finished" and not await self.redis.xread({key: after}, count=1):
                    return
            if not follow and not entries:
                return
            if follow and not entries and (await self.get(job_id)).status in TERMINAL:
                return

    # -- leases ---------------------------------------------------------------------------------

    async def acquire_lease(self, job_id: str, ttl_s: float) -> int | None:
        """A fencing token if the job is queued or running and nobody holds its lease, else None."""
        token = int(await self._acquire(
            keys=[keys.lease(job_id), keys.fence(job_id), keys.ACTIVE, keys.job(job_id)],
            args=[int(ttl_s * 1000), _ms(ttl_s), job_id],
        ))  # fmt: skip
        return token if token > 0 else None

    async def holds_lease(self, job_id: str, token: int) -> bool:
        """Whether `token` is still the job's current lease."""
        return await self.redis.get(keys.lease(job_id)) == str(token)

    async def release_lease(self, job_id: str, token: int, check_after_s: float | None = None) -> None:
        """Give the lease up, if still ours; a job still active is reconciled after `check_after_s`."""
        delay = self.reconcile_after_s if check_after_s is None else check_after_s
        await self._release(keys=[keys.lease(job_id), keys.ACTIVE], args=[token, job_id, _ms(delay)])

    async def count_stall(self, job_id: str) -> int:
        """Count one more run of the job since it last made progress; returns the count."""
        key = keys.stalls(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.ttl)
            count, _ = await pipe.execute()
        return int(count)

    async def uncount_stall(self, job_id: str) -> None:
        """The run ended by itself (handed back, fenced off): it was not a stall."""
        await self.redis.decr(keys.stalls(job_id))

    async def reset_stalls(self, job_id: str) -> None:
        """The job made progress (or a reviewer answered it): its dead-letter count starts over."""
        await self.redis.delete(keys.stalls(job_id))

    # -- the reconciler ---------------------------------------------------------------------------

    async def elect(self, me: str, ttl_s: float) -> bool:
        """Become (or stay) the fleet's one reconciler for `ttl_s`."""
        return bool(await self._elect(keys=[keys.RECONCILER], args=[me, int(ttl_s * 1000)]))

    async def due(self, limit: int = 500) -> list[str]:
        """Active jobs the reconciler should look at now."""
        return cast("list[str]", await self.redis.zrangebyscore(keys.ACTIVE, "-inf", _ms(), start=0, num=limit))

    async def unleased(self, job_ids: list[str]) -> list[str]:
        """Of these due jobs, those still queued or running with no live lease (the rest are rescheduled)."""
        now = _ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._check(keys=[keys.lease(job_id), keys.job(job_id), keys.ACTIVE], args=[job_id, now],
                                  client=pipe)  # fmt: skip
            replies = await pipe.execute()
        return [job_id for job_id, reply in zip(job_ids, replies, strict=True) if int(reply) == 2]

    async def queued_messages(self, queues: list[str]) -> set[str]:
        """Job ids with a `run_job` message waiting in these queues, or delivered a moment ago.

        A delivered message stays in kombu's `unacked` hash until its worker acknowledges it, and
        a killed worker's stays there until the visibility timeout (an hour or two): so one counts
        only while it is younger than `reconcile_after_s` (a live worker takes the lease within
        milliseconds of delivery).
        """
        found: set[str] = set()
        for queue in queues:
            start = 0
            while batch := cast("list[str]", await self.redis.lrange(queue, start, start + 999)):
                found.update(_job_ids(batch))
                start += len(batch)
        recent = cast("list[str]", await self.redis.zrangebyscore(keys.UNACKED_INDEX, _now() - self.reconcile_after_s,
                                                                  "+inf"))  # fmt: skip
        if recent:
            delivered = cast("list[str | None]", await self.redis.hmget(keys.UNACKED, recent))
            found.update(_job_ids([raw for raw in delivered if raw]))
        return found

    async def claim_republish(self, job_id: str) -> bool:
        """Atomically: the job is still active with no lease, and is rescheduled; True: publish it."""
        return bool(await self._claim(keys=[keys.lease(job_id), keys.job(job_id), keys.ACTIVE],
                                      args=[job_id, _ms(self.reconcile_after_s)]))  # fmt: skip

    # -- memo ------------------------------------------------------------------------------------

    async def memo(self, job_id: str, step: str) -> dict[str, Any] | None:
        """A step's remembered skill result."""
        raw = await self.redis.hget(keys.memo(job_id), step)
        return json.loads(raw) if raw else None

    async def remember(self, job_id: str, step: str, result: dict[str, Any]) -> None:
        """Remember a step's skill result (a paused step must not ask the model again)."""
        key = keys.memo(job_id)
        await self.redis.hset(key, step, json.dumps(result))
        await self.redis.expire(key, self.ttl)

    # -- catalog ---------------------------------------------------------------------------------

    async def publish_graphs(self, entries: list[dict[str, Any]], ttl_s: int) -> None:
        """Announce the graphs this worker serves, for `ttl_s` (refreshed while it lives)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.set(keys.catalog(entry["name"]), json.dumps(entry), ex=ttl_s)
            await pipe.execute()

    async def catalog(self) -> dict[str, dict[str, Any]]:
        """The graphs some live worker serves, by name."""
        found = [k async for k in self.redis.scan_iter(keys.catalog_pattern(), count=500)]
        raws = cast("list[str | None]", await self.redis.mget(found) if found else [])
        return {json.loads(r)["name"]: json.loads(r) for r in raws if r}


_ARGS = '"argsrepr": "'


def _job_ids(messages: list[str]) -> set[str]:
    """Job ids of the `run_job` messages among raw kombu messages (Celery's protocol 2 headers)."""
    found = set()
    for raw in messages:
        start = raw.find(_ARGS)
        if start < 0 or "slmflow.run_job" not in raw:
            continue
        start += len(_ARGS)
        argsrepr = raw[start : raw.find('"', start)]
        job_id = argsrepr.strip("[]()' ,")
        if job_id:
            found.add(job_id)
    return found


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


def new_job_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def _store_errors_mapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """Redis failing is `StoreUnavailable` (an `EndpointUnreachable` naming the setting), password masked."""

    def unavailable(store: Any, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"cannot reach Redis at {mask_url(store.url)} (SLMFLOW_REDIS_URL): {exc}")

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, *args, **kwargs):
                    yield item
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise unavailable(self, exc) from None

        return stream

    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unavailable(self, exc) from None

    return call


for _name, _method in list(vars(JobStore).items()):
    if not _name.startswith("_") and (inspect.iscoroutinefunction(_method) or inspect.isasyncgenfunction(_method)):
        setattr(JobStore, _name, _store_errors_mapped(_method))
