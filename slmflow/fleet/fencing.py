"""Checkpoints a worker may write only while it holds the job's lease.

On Postgres the fence is in the database: each write is one pipeline whose first statement is a
fencing check on a `slmflow_fences` row (the highest lease token seen for the thread), so a worker whose
lease was taken over can never write, however late its write arrives; a new run claims the row
before its first step. Elsewhere (SQLite, memory: single-host use) the lease is checked in Redis
before each write.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres import _ainternal
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from slmflow.checkpoints import setup_postgres
from slmflow.fleet.store import JobStore, LeaseLost, current_lease

__all__ = ["FencedPostgresSaver", "RedisFencedSaver", "fenced", "on_checkpoint", "open_fenced_postgres"]

on_checkpoint: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("slmflow_on_checkpoint", default=None)
"""Called after each checkpoint the current run writes: the run made progress."""


async def _progressed() -> None:
    hook = on_checkpoint.get()
    if hook is not None:
        await hook()


_FENCES = """
CREATE TABLE IF NOT EXISTS slmflow_fences (thread_id TEXT PRIMARY KEY, token BIGINT NOT NULL)
"""
# Take the thread's fence for `lease` unless a newer lease already did; else fail the transaction
# (SQLSTATE SF001), so a fenced-off write fails without a round trip of its own (pipeline mode).
_FENCE_FUNCTION = """
CREATE OR REPLACE FUNCTION slmflow_fence(thread TEXT, lease BIGINT) RETURNS VOID AS $$
DECLARE taken INTEGER;
BEGIN
  INSERT INTO slmflow_fences (thread_id, token) VALUES (thread, lease)
  ON CONFLICT (thread_id) DO UPDATE SET token = EXCLUDED.token WHERE slmflow_fences.token <= EXCLUDED.token;
  GET DIAGNOSTICS taken = ROW_COUNT;
  IF taken = 0 THEN
    RAISE EXCEPTION 'slmflow: a newer lease holds thread %', thread USING ERRCODE = 'SF001';
  END IF;
END $$ LANGUAGE plpgsql
"""
_FENCED = "SF001"


class FencedPostgresSaver(AsyncPostgresSaver):
    """LangGraph's Postgres saver whose writes carry the running job's fencing token.

    It overrides the saver's `_cursor` (every write goes through it with `pipeline=True`), so the
    fence and the write go as one pipeline, fence first; pinned below 4 in pyproject for that
    reason. What runs between two Syncs of the extended query protocol is one implicit
    transaction, and after an error the server skips every message up to the Sync: a failed fence
    writes nothing, and a write that fails half-way is rolled back whole. An explicit
    `conn.transaction()` would add BEGIN, COMMIT and a Sync of its own at each end, for nothing.

    On a pool each operation has its own connection, so the saver's process-wide
    lock (there for a single shared connection) is not taken: it serialized every job's checkpoints.
    """

    async def claim(self, job_id: str, token: int) -> None:
        """Take the thread's fence for this run before it runs a step (`LeaseLost` if newer exists)."""
        try:
            async with _ainternal.get_connection(self.conn) as conn:
                await conn.execute("SELECT slmflow_fence(%s, %s)", (job_id, token))
        except psycopg.Error as exc:
            raise _fenced_off(exc, job_id) from None

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:  # fmt: skip
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        await _progressed()
        return saved

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        if not isinstance(self.conn, AsyncConnectionPool):  # one shared connection: LangGraph's own way
            async with super()._cursor(pipeline=pipeline) as cur:
                yield cur
            return
        lease = current_lease.get()
        async with self.conn.connection() as conn:
            if not pipeline:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
                return
            try:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    if lease is not None:
                        await cur.execute("SELECT slmflow_fence(%s, %s)", lease)
                    yield cur
            except psycopg.Error as exc:
                raise _fenced_off(exc, lease[0] if lease else "?") from None


def _fenced_off(exc: psycopg.Error, job_id: str) -> Exception:
    """`LeaseLost` for the fence's own error; any other database error as it was."""
    return LeaseLost(job_id, "checkpoint fence") if exc.sqlstate == _FENCED else exc


class _CheckIdle:
    """A pool's connection check, paid only by connections idle for `after_s` or more.

    Checking every checkout cost a round trip per checkpoint write (6% of a busy jobs worker's CPU).
    A connection that went back to the pool moments ago is as alive as a check would find it; one
    that sat idle through a database restart is caught here. A connection that dies in between
    fails its write, which the runtime treats as a store fault: the job is given back, not failed.
    """

    def __init__(self, after_s: float = 2.0) -> None:
        self.after_s = after_s
        self._returned: WeakKeyDictionary[Any, float] = WeakKeyDictionary()

    async def returned(self, conn: Any) -> None:
        """The pool's `reset` hook: `conn` just came back."""
        self._returned[conn] = time.monotonic()

    async def check(self, conn: Any) -> None:
        """The pool's `check` hook: raises for a dead connection (the pool then replaces it)."""
        if time.monotonic() - self._returned.get(conn, 0.0) >= self.after_s:
            await AsyncConnectionPool.check_connection(conn)


@asynccontextmanager
async def open_fenced_postgres(url: str, pool_size: int) -> AsyncIterator[FencedPostgresSaver]:
    """A fenced Postgres saver on a pool whose dead connections are replaced (a restart is survived)."""
    options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    idle = _CheckIdle()
    pool = AsyncConnectionPool(
        url, min_size=1, max_size=pool_size, kwargs=options, open=False,
        check=idle.check, reset=idle.returned, reconnect_timeout=60, timeout=15,
    )  # fmt: skip
    async with pool:
        saver = FencedPostgresSaver(pool)
        await setup_postgres(saver, pool, _FENCES, _FENCE_FUNCTION)
        yield saver


class RedisFencedSaver(BaseCheckpointSaver[str]):
    """Writes checkpoints only while the running job's lease is still held in Redis (else `LeaseLost`)."""

    def __init__(self, inner: BaseCheckpointSaver[str], store: JobStore) -> None:
        super().__init__(serde=inner.serde)
        self.inner, self.store = inner, store

    async def claim(self, job_id: str, token: int) -> None:
        """Nothing to claim: each write checks the lease."""

    async def check(self) -> None:
        """Raise `LeaseLost` unless the current job still holds its lease."""
        lease = current_lease.get()
        if lease is None or not await self.store.holds_lease(*lease):
            raise LeaseLost(lease[0] if lease else "?", "checkpoint")

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(self, config: RunnableConfig | None, **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        async for item in self.inner.alist(config, **kwargs):
            yield item

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:  # fmt: skip
        await self.check()
        saved = await self.inner.aput(config, checkpoint, metadata, new_versions)
        await _progressed()
        return saved

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self.check()
        await self.inner.aput_writes(config, writes, task_id, task_path)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.inner.get_next_version(current, channel)


def fenced(saver: BaseCheckpointSaver[str], store: JobStore) -> FencedPostgresSaver | RedisFencedSaver:
    """`saver` with the fence that fits it."""
    return saver if isinstance(saver, FencedPostgresSaver) else RedisFencedSaver(saver, store)
