"""The job store on Redis: records, event streams, idempotency, leases, tool results, catalog.

Keys (all under `slmflow:`, all expiring after `job_ttl_s` unless said otherwise):

| key | holds |
|---|---|
| `job:{id}` | a hash: `status` (compare-and-set by scripts) and `data`, the `JobRecord` JSON |
| `events:{id}` | the job's events (a Redis Stream, append-only) |
| `idem:{key}` | the first job id submitted under an idempotency key |
| `jobs` | sorted set of job ids by creation time (for `list`) |
| `fence:{id}` / `lease:{id}` | fencing counter / current lease (the token), expiring after `lease_ttl_s` |
| `running` | sorted set of running job ids by lease expiry (for the sweeper) |
| `attempts:{id}` | runs of the job so far (redelivery has no counter of its own) |
| `tool:{key}` / `toolrun:{key}` / `tooldone:{key}` | a tool call's stored result / its run claim / a wake-up list |
| `memo:{id}` | skill results a node must not recompute when it re-runs (a paused step) |
| `catalog:{graph}` | a graph a live worker serves, refreshed while the worker lives |

Every write a worker makes to a job it runs goes through `fenced_*`: it lands only while the
worker's lease token is still the job's current one, so a worker that lost its lease (it stalled,
its lease expired, another took over) can no longer change the job.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slmflow.errors import EndpointUnreachable, JobNotFound
from slmflow.events import Event
from slmflow.fleet import lua
from slmflow.fleet.records import TERMINAL, JobRecord
from slmflow.jobs import JobStatus

__all__ = ["CancelSignal", "JobStore", "LeaseLost", "new_job_id"]

P = "slmflow:"


class LeaseLost(Exception):  # noqa: N818 - a signal, not an error: the worker stops quietly
    """This worker no longer holds the job's lease: another took it over. Stop writing."""


class CancelSignal(Exception):  # noqa: N818 - a signal: the job was cancelled, stop running it
    """Someone cancelled the job; the worker stops it and records `cancelled`."""


def _record(status: str | None, data: str, cancelled_at: str | None) -> JobRecord:
    record = JobRecord.model_validate_json(data)
    if status and status != record.status:
        record.status = JobStatus(status)
        if cancelled_at:
            record.finished_at = datetime.fromisoformat(cancelled_at)
    return record


def _now() -> float:
    return time.time()


class JobStore:
    """Async access to the fleet's Redis keys (one instance per process and event loop)."""

    def __init__(self, url: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True, max_connections=1000)
        self.url, self.ttl = url, ttl_s
        self._create = self.redis.register_script(lua.CREATE)
        self._fenced_put = self.redis.register_script(lua.FENCED_PUT)
        self._requeue = self.redis.register_script(lua.REQUEUE)
        self._fenced_xadd = self.redis.register_script(lua.FENCED_XADD)
        self._renew = self.redis.register_script(lua.RENEW)
        self._acquire = self.redis.register_script(lua.ACQUIRE)
        self._release = self.redis.register_script(lua.RELEASE)
        self._cancel = self.redis.register_script(lua.CANCEL)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def ping(self) -> None:
        """Fail with a clear error (`EndpointUnreachable`) when Redis does not answer."""
        await self.redis.ping()

    # -- records -------------------------------------------------------------------------------

    async def create(self, record: JobRecord, idempotency_key: str | None) -> tuple[str, bool]:
        """Store a new record; with a key already used, nothing is written: (first job id, False)."""
        idem = f"{P}idem:{idempotency_key}" if idempotency_key else f"{P}idem:-{record.id}"
        job_id = await self._create(
            keys=[idem, f"{P}job:{record.id}", f"{P}jobs"],
            args=[record.id, record.model_dump_json(), self.ttl, record.created_at.timestamp()],
        )
        if not idempotency_key:
            await self.redis.delete(idem)
        return str(job_id), job_id == record.id

    async def get(self, job_id: str) -> JobRecord:
        """The job's record, or `JobNotFound`."""
        status, data, cancelled_at = cast(
            "list[str | None]", await self.redis.hmget(f"{P}job:{job_id}", ["status", "data", "cancelled_at"])
        )
        if data is None:
            raise JobNotFound(f"no job {job_id!r} (expired after SLMFLOW_JOB_TTL_S, or never submitted)", job_id=job_id)
        return _record(status, data, cancelled_at)

    async def fenced_put(self, record: JobRecord, token: int) -> None:
        """Overwrite a record while holding its lease: `LeaseLost` if not, `CancelSignal` if cancelled."""
        done = await self._fenced_put(
            keys=[f"{P}lease:{record.id}", f"{P}job:{record.id}"],
            args=[token, record.status.value, record.model_dump_json()],
        )
        if done == 0:
            raise LeaseLost(record.id)
        if done == -1:
            raise CancelSignal(record.id)

    async def requeue_for_review(self, record: JobRecord) -> bool:
        """Store `record` as queued again if the job still waits for review; False if not."""
        done = await self._requeue(
            keys=[f"{P}job:{record.id}"], args=[JobStatus.NEEDS_REVIEW.value, record.model_dump_json()]
        )
        return bool(done)

    async def recent(
        self, status: JobStatus | None = None, graph: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """The newest jobs first, filtered by status and graph."""
        found: list[JobRecord] = []
        start = 0
        while len(found) < limit:
            ids = cast("list[str]", await self.redis.zrevrange(f"{P}jobs", start, start + 199))
            if not ids:
                break
            start += len(ids)
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(f"{P}job:{job_id}", ["status", "data", "cancelled_at"])
                rows = cast("list[list[str | None]]", await pipe.execute())
            for status_, data, cancelled_at in rows:
                if data is None:
                    continue
                record = _record(status_, data, cancelled_at)
                if (status is None or record.status == status) and (graph is None or record.graph == graph):
                    found.append(record)
        return found[:limit]

    async def cancel(self, job_id: str) -> str:
        """`cancelled` (was queued), `cancelling` (running: its worker stops it) or `finished`."""
        outcome = await self._cancel(keys=[f"{P}job:{job_id}", f"{P}cancel:{job_id}"], args=[_iso_now(), self.ttl])
        if outcome == -1:
            raise JobNotFound(f"no job {job_id!r}", job_id=job_id)
        return {1: "cancelled", 2: "cancelling", 0: "finished"}[int(outcome)]

    async def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this running job."""
        return bool(await self.redis.exists(f"{P}cancel:{job_id}"))

    # -- events --------------------------------------------------------------------------------

    async def append_event(self, job_id: str, event: Event, token: int | None = None) -> None:
        """Append to the job's stream (fenced when a worker passes its lease token)."""
        key = f"{P}events:{job_id}"
        if token is None:
            await self.redis.xadd(key, {"event": event.model_dump_json()})
            await self.redis.expire(key, self.ttl)
            return
        done = await self._fenced_xadd(
            keys=[f"{P}lease:{job_id}", key], args=[token, event.model_dump_json(), self.ttl]
        )
        if not done:
            raise LeaseLost(job_id)

    async def events(
        self, job_id: str, after: str = "0", *, follow: bool = False, block_ms: int = 1000
    ) -> AsyncIterator[Event]:
        """Events after stream id `after`; with `follow`, waits for more until the job finishes."""
        key = f"{P}events:{job_id}"
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
        """A fencing token if nobody holds the job's lease, else None."""
        token = await self._acquire(
            keys=[f"{P}lease:{job_id}", f"{P}fence:{job_id}", f"{P}running"],
            args=[int(ttl_s * 1000), (_now() + ttl_s) * 1000, job_id],
        )
        return int(token) or None

    async def renew_lease(self, job_id: str, token: int, ttl_s: float) -> bool:
        """Extend the lease if still held with `token`."""
        done = await self._renew(
            keys=[f"{P}lease:{job_id}", f"{P}running"],
            args=[token, int(ttl_s * 1000), (_now() + ttl_s) * 1000, job_id],
        )
        return bool(done)

    async def heartbeat(self, leases: dict[str, int], ttl_s: float) -> dict[str, str]:
        """Renew many leases in one round trip; returns `cancelled` or `lease_lost` for jobs to stop."""
        expires = (_now() + ttl_s) * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, token in leases.items():
                await self._renew(keys=[f"{P}lease:{job_id}", f"{P}running"],
                                  args=[token, int(ttl_s * 1000), expires, job_id], client=pipe)  # fmt: skip
                pipe.exists(f"{P}cancel:{job_id}")
            replies = await pipe.execute()
        stop = {}
        for index, job_id in enumerate(leases):
            renewed, cancel = replies[2 * index], replies[2 * index + 1]
            if cancel:
                stop[job_id] = "cancelled"
            elif not renewed:
                stop[job_id] = "lease_lost"
        return stop

    async def holds_lease(self, job_id: str, token: int) -> bool:
        """Whether `token` is still the job's current lease."""
        return await self.redis.get(f"{P}lease:{job_id}") == str(token)

    async def release_lease(self, job_id: str, token: int) -> None:
        """Give the lease up (the job ended or paused)."""
        await self._release(keys=[f"{P}lease:{job_id}", f"{P}running"], args=[token, job_id])

    async def lapsed_leases(self) -> list[str]:
        """Running jobs whose lease expired: their worker died or stalled."""
        ids = cast("list[str]", await self.redis.zrangebyscore(f"{P}running", "-inf", _now() * 1000))
        lapsed = []
        for job_id in ids:
            if not await self.redis.exists(f"{P}lease:{job_id}"):
                lapsed.append(job_id)
        return lapsed

    async def claim_takeover(self, job_id: str) -> bool:
        """One sweeper wins the right to re-enqueue a lapsed job (per fencing generation)."""
        fence = cast("str | None", await self.redis.get(f"{P}fence:{job_id}")) or "0"
        won = await self.redis.set(f"{P}takeover:{job_id}:{fence}", "1", nx=True, ex=self.ttl)
        if won:
            await self.redis.zrem(f"{P}running", job_id)
        return bool(won)

    async def count_attempt(self, job_id: str) -> int:
        """Count one more run of the job; returns the count."""
        key = f"{P}attempts:{job_id}"
        count = int(await self.redis.incr(key))
        await self.redis.expire(key, self.ttl)
        return count

    async def reset_attempts(self, job_id: str) -> None:
        """Forget the run count (a reviewed job starts a fresh series)."""
        await self.redis.delete(f"{P}attempts:{job_id}")

    # -- tool results ----------------------------------------------------------------------------

    async def tool_result(self, key: str) -> dict[str, Any] | None:
        """The stored outcome of a tool call, if it already ran."""
        raw = await self.redis.get(f"{P}tool:{key}")
        return json.loads(raw) if raw else None

    async def wait_tool_result(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        """Wait for a tool call's outcome (woken by its task), or None after `timeout_s`."""
        deadline = _now() + timeout_s
        while True:
            stored = await self.tool_result(key)
            if stored is not None:
                return stored
            left = deadline - _now()
            if left <= 0:
                return None
            await self.redis.blpop([f"{P}tooldone:{key}"], timeout=min(left, 1.0))

    async def memo(self, job_id: str, step: str) -> dict[str, Any] | None:
        """A step's remembered skill result."""
        raw = await self.redis.hget(f"{P}memo:{job_id}", step)
        return json.loads(raw) if raw else None

    async def remember(self, job_id: str, step: str, result: dict[str, Any]) -> None:
        """Remember a step's skill result (a paused step must not ask the model again)."""
        key = f"{P}memo:{job_id}"
        await self.redis.hset(key, step, json.dumps(result))
        await self.redis.expire(key, self.ttl)

    # -- catalog ---------------------------------------------------------------------------------

    async def publish_graphs(self, entries: list[dict[str, Any]], ttl_s: int) -> None:
        """Announce the graphs this worker serves, for `ttl_s` (refreshed while it lives)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.set(f"{P}catalog:{entry['name']}", json.dumps(entry), ex=ttl_s)
            await pipe.execute()

    async def catalog(self) -> dict[str, dict[str, Any]]:
        """The graphs some live worker serves, by name."""
        keys = [k async for k in self.redis.scan_iter(f"{P}catalog:*", count=500)]
        raws = cast("list[str | None]", await self.redis.mget(keys) if keys else [])
        return {json.loads(r)["name"]: json.loads(r) for r in raws if r}


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


def new_job_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def _redis_errors_mapped(method: Callable[..., Any], url_of: Callable[[Any], str]) -> Callable[..., Any]:
    """Redis being down is an unreachable endpoint (a user error naming the setting), not a traceback."""

    def unreachable(store: Any, exc: Exception) -> EndpointUnreachable:
        return EndpointUnreachable(f"cannot reach Redis at {url_of(store)} (SLMFLOW_REDIS_URL): {exc}")

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, *args, **kwargs):
                    yield item
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise unreachable(self, exc) from None

        return stream

    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise unreachable(self, exc) from None

    return call


for _name, _method in list(vars(JobStore).items()):
    if not _name.startswith("_") and (inspect.iscoroutinefunction(_method) or inspect.isasyncgenfunction(_method)):
        setattr(JobStore, _name, _redis_errors_mapped(_method, lambda store: store.url))
