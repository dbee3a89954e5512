"""Checkpoints on Postgres are fenced in the database: a run whose lease was taken over never writes."""

from __future__ import annotations

import uuid
from typing import Any

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
        current_lease.set((thread, 2))
        await saver.aput(config(thread), empty_checkpoint(), {"step": 1}, {})
        assert len([c async for c in saver.alist(config(thread))]) == 2
        current_lease.set(None)
