"""The job store's guarantees on a real Redis: fencing, idempotent create, cancel, catalog expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from slmflow.events import Event
from slmflow.fleet.records import JobRecord
from slmflow.fleet.runtime import FencedCheckpointer, _lease
from slmflow.fleet.store import JobStore, LeaseLost
from slmflow.jobs import JobStatus

pytestmark = pytest.mark.redis


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    store = JobStore("redis://127.0.0.1:6379/10", ttl_s=60)
    await store.redis.flushdb()
    yield store
    await store.aclose()


def record(job_id: str = "j1") -> JobRecord:
    return JobRecord(id=job_id, graph="g", input={"x": 1})


async def test_a_worker_whose_lease_lapsed_can_no_longer_write(store: JobStore) -> None:
    await store.create(record(), None)
    stale = await store.acquire_lease("j1", ttl_s=0.2)
    assert stale is not None and await store.acquire_lease("j1", ttl_s=5) is None  # held: nobody else
    await asyncio.sleep(0.3)
    fresh = await store.acquire_lease("j1", ttl_s=5)
    assert fresh is not None and fresh > stale
    late = record().model_copy(update={"status": JobStatus.SUCCEEDED})
    with pytest.raises(LeaseLost):
        await store.fenced_put(late, stale)
    with pytest.raises(LeaseLost):
        await store.append_event("j1", Event(kind="job_finished"), stale)
    assert not await store.renew_lease("j1", stale, 5)
    await store.fenced_put(record().model_copy(update={"status": JobStatus.RUNNING}), fresh)
    assert (await store.get("j1")).status == JobStatus.RUNNING


async def test_checkpoints_of_a_job_that_lost_its_lease_are_refused(store: JobStore) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    saver = FencedCheckpointer(InMemorySaver(), store)
    token = await store.acquire_lease("j1", ttl_s=0.2)
    assert token is not None
    _lease.set(("j1", token))
    await saver.check()  # held: fine
    await asyncio.sleep(0.3)
    with pytest.raises(LeaseLost):
        await saver.check()


async def test_create_with_a_used_key_returns_the_first_job_and_writes_nothing(store: JobStore) -> None:
    assert await store.create(record("a"), "key-1") == ("a", True)
    assert await store.create(record("b"), "key-1") == ("a", False)
    assert await store.redis.exists("slmflow:job:b") == 0
    assert [r.id for r in await store.recent()] == ["a"]


async def test_cancel_moves_a_queued_job_and_flags_a_running_one(store: JobStore) -> None:
    await store.create(record("q"), None)
    assert await store.cancel("q") == "cancelled"
    assert (await store.get("q")).status == JobStatus.CANCELLED
    await store.create(record("r"), None)
    token = await store.acquire_lease("r", 5)
    assert token is not None
    await store.fenced_put(record("r").model_copy(update={"status": JobStatus.RUNNING}), token)
    assert await store.cancel("r") == "cancelling"
    assert await store.heartbeat({"r": token}, 5) == {"r": "cancelled"}


async def test_heartbeat_reports_lost_leases(store: JobStore) -> None:
    token = await store.acquire_lease("x", 0.1)
    assert token is not None
    await asyncio.sleep(0.2)
    assert await store.heartbeat({"x": token}, 5) == {"x": "lease_lost"}
    assert await store.lapsed_leases() == ["x"]
    assert await store.claim_takeover("x") and not await store.claim_takeover("x")  # one sweeper wins
