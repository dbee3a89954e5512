"""Checkpoints on Postgres are fenced in the database: a run whose lease was taken over never writes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint

from slmflow.fleet.fencing import open_fenced_postgres
from slmflow.fleet.store import LeaseLost, current_lease

pytestmark = pytest.mark.postgres

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


async def test_a_late_writer_is_refused_once_a_newer_run_claimed_the_thread() -> None:
    thread = f"fence-{uuid.uuid4().hex}"
    async with open_fenced_postgres(PG_URL, 2) as saver:
        current_lease.set((thread, 1))
        await saver.claim(thread, 1)
        await saver.aput(config(thread), empty_checkpoint(), {"step": 0}, {})
        # The worker stalls; its lease lapses; a new run takes token 2 and claims the thread.
        await saver.claim(thread, 2)
        with pytest.raises(LeaseLost):
            await saver.aput(config(thread), empty_checkpoint(), {"step": 1}, {})
        with pytest.raises(LeaseLost):
            await saver.aput_writes(config(thread) | {"configurable": {**config(thread)["configurable"],
                                                                       "checkpoint_id": "x"}},
                                    [("channel", 1)], "task-1")  # fmt: skip
        with pytest.raises(LeaseLost):
            await saver.claim(thread, 1)  # nor can it claim the thread back
        stored = [c async for c in saver.alist(config(thread))]
        assert [c.metadata.get("step") for c in stored] == [0]  # the late write left no trace
        async with saver.conn.connection() as conn:  # type: ignore[union-attr]
            rows = await conn.execute("SELECT count(*) AS n FROM checkpoint_writes WHERE thread_id = %s", (thread,))
            assert (await rows.fetchone())["n"] == 0  # type: ignore[index]
        current_lease.set((thread, 2))
        await saver.aput(config(thread), empty_checkpoint(), {"step": 1}, {})
        assert len([c async for c in saver.alist(config(thread))]) == 2
        current_lease.set(None)


async def test_a_write_that_fails_half_way_leaves_nothing() -> None:
    """The fence and the statements after it are one implicit transaction (one pipeline, one Sync)."""
    thread = f"fence-{uuid.uuid4().hex}"
    table = f"fence_probe_{uuid.uuid4().hex[:12]}"
    async with open_fenced_postgres(PG_URL, 2) as saver:
        async with saver.conn.connection() as conn:  # type: ignore[union-attr]
            await conn.execute(f"CREATE TABLE {table} (n INT PRIMARY KEY)")
        try:
            current_lease.set((thread, 1))
            await saver.claim(thread, 1)
            with pytest.raises(Exception, match="duplicate key"):
                async with saver._cursor(pipeline=True) as cur:
                    await cur.execute(f"INSERT INTO {table} VALUES (1)")
                    await cur.execute(f"INSERT INTO {table} VALUES (2)")
                    await cur.execute(f"INSERT INTO {table} VALUES (1)")  # fails: the first two go too
            async with saver._cursor(pipeline=True) as cur:
                await cur.execute(f"INSERT INTO {table} VALUES (3)")
            async with saver.conn.connection() as conn:  # type: ignore[union-attr]
                rows = await conn.execute(f"SELECT n FROM {table} ORDER BY n")
                assert [r["n"] for r in await rows.fetchall()] == [3]  # type: ignore[index]
        finally:
            current_lease.set(None)
            async with saver.conn.connection() as conn:  # type: ignore[union-attr]
                await conn.execute(f"DROP TABLE {table}")


async def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use() -> None:
    """Connections back in the pool for a while are checked at checkout (a database restart is survived)."""
    thread = f"fence-{uuid.uuid4().hex}"
    async with open_fenced_postgres(PG_URL, 2) as saver:
        pool = saver.conn
        async with pool.connection() as one, pool.connection() as two:  # type: ignore[union-attr]
            pids = {one.info.backend_pid, two.info.backend_pid}
        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
            for pid in pids:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.sleep(2.2)  # idle past the check's threshold
        current_lease.set((thread, 1))
        try:
            await saver.claim(thread, 1)
            await saver.aput(config(thread), empty_checkpoint(), {"step": 0}, {})
        finally:
            current_lease.set(None)
        async with pool.connection() as conn:  # type: ignore[union-attr]
            assert conn.info.backend_pid not in pids
