"""The job store's guarantees on a real Redis: fencing, idempotent create, cancel, the reconciler's view."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from slmflow.errors import IdempotencyConflict
from slmflow.events import Event, JobFinished, ToolCalled
from slmflow.fleet import keys
from slmflow.fleet.calls import JobCalls
from slmflow.fleet.fencing import RedisFencedSaver
from slmflow.fleet.store import Heartbeat, JobStore, LeaseLost, current_lease
from slmflow.outcomes import JobRecord, JobStatus

pytestmark = pytest.mark.redis


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    store = JobStore("redis://127.0.0.1:6379/10", ttl_s=60, reconcile_after_s=0.2)
    await store.redis.flushdb()
    yield store
    await store.aclose()


def record(job_id: str = "j1", **update: object) -> JobRecord:
    return JobRecord(job_id=job_id, graph="g", input={"x": 1}).model_copy(update=update)


async def test_a_worker_whose_lease_lapsed_can_no_longer_write(store: JobStore) -> None:
    await store.create(record(), None)
    stale = await store.acquire_lease("j1", ttl_s=0.2)
    assert stale is not None and await store.acquire_lease("j1", ttl_s=5) is None  # held: nobody else
    await asyncio.sleep(0.3)
    fresh = await store.acquire_lease("j1", ttl_s=5)
    assert fresh is not None and fresh > stale
    with pytest.raises(LeaseLost):
        await store.fenced_put(record(status=JobStatus.SUCCEEDED), stale)
    with pytest.raises(LeaseLost):
        await store.append_event("j1", Event(kind="job_finished", data=JobFinished(status="failed")), stale)
    assert Heartbeat(store.url).beat({"j1": stale}, 5) == {"j1": "lease_lost"}
    await store.fenced_put(record(status=JobStatus.RUNNING), fresh)
    assert (await store.get("j1")).status == JobStatus.RUNNING


async def test_only_the_holder_releases_a_lease(store: JobStore) -> None:
    await store.create(record(), None)
    stale = await store.acquire_lease("j1", ttl_s=0.1)
    await asyncio.sleep(0.2)
    fresh = await store.acquire_lease("j1", ttl_s=5)
    assert stale is not None and fresh is not None
    await store.release_lease("j1", stale)  # the late original lets go: nothing changes
    assert await store.holds_lease("j1", fresh)
    assert await store.unleased(["j1"]) == []


async def test_redis_fenced_checkpoints_of_a_job_that_lost_its_lease_are_refused(store: JobStore) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    await store.create(record(), None)
    saver = RedisFencedSaver(InMemorySaver(), store)
    token = await store.acquire_lease("j1", ttl_s=0.2)
    assert token is not None
    current_lease.set(("j1", token))
    await saver.check()  # held: fine
    await asyncio.sleep(0.3)
    with pytest.raises(LeaseLost):
        await saver.check()


async def test_create_with_a_used_key_returns_the_first_job_and_writes_nothing(store: JobStore) -> None:
    assert await store.create(record("a"), "key-1") == ("a", True)
    assert await store.create(record("b"), "key-1") == ("a", False)
    assert await store.redis.exists(keys.job("b")) == 0
    assert [r.job_id for r in await store.recent()] == ["a"]


async def test_a_key_reused_with_another_input_is_a_conflict(store: JobStore) -> None:
    await store.create(record("a"), "key-1")
    with pytest.raises(IdempotencyConflict, match="key-1"):
        await store.create(JobRecord(job_id="b", graph="g", input={"x": 2}), "key-1")
    with pytest.raises(IdempotencyConflict):
        await store.create(JobRecord(job_id="c", graph="other", input={"x": 1}), "key-1")
    assert await store.redis.exists(keys.job("b"), keys.job("c")) == 0


async def test_cancel_moves_a_queued_job_and_flags_a_running_one(store: JobStore) -> None:
    await store.create(record("q"), None)
    assert await store.cancel("q") == "cancelled"
    assert (await store.get("q")).status == JobStatus.CANCELLED
    assert await store.redis.zscore(keys.ACTIVE, "q") is None
    await store.create(record("r"), None)
    token = await store.acquire_lease("r", 5)
    assert token is not None
    await store.fenced_put(record("r", status=JobStatus.RUNNING), token)
    assert await store.cancel("r") == "cancelling"
    assert Heartbeat(store.url).beat({"r": token}, 5) == {"r": "cancelled"}


async def test_a_settled_job_leaves_the_active_set_and_cannot_be_leased_again(store: JobStore) -> None:
    await store.create(record(), None)
    token = await store.acquire_lease("j1", 5)
    assert token is not None
    await store.fenced_put(record(status=JobStatus.SUCCEEDED), token)
    assert await store.redis.zscore(keys.ACTIVE, "j1") is None
    await store.release_lease("j1", token)
    assert await store.acquire_lease("j1", 5) is None  # a duplicate delivery of an ended job runs nothing
    assert await store.acquire_lease("never-submitted", 5) is None


async def test_the_reconciler_sees_only_active_jobs_with_no_lease_once_they_are_due(store: JobStore) -> None:
    for job_id in ("queued", "leased", "lapsed", "done"):
        await store.create(record(job_id), None)
    assert await store.due() == []  # just created: their messages are on their way
    leased = await store.acquire_lease("leased", 5)
    lapsed = await store.acquire_lease("lapsed", 0.1)
    done = await store.acquire_lease("done", 5)
    assert leased and lapsed and done
    await store.fenced_put(record("done", status=JobStatus.SUCCEEDED), done)
    await asyncio.sleep(0.3)
    assert sorted(await store.due()) == ["lapsed", "queued"]
    assert sorted(await store.unleased(await store.due())) == ["lapsed", "queued"]
    assert await store.claim_republish("lapsed") and "lapsed" not in await store.due()


async def test_the_reconciler_finds_run_job_messages_waiting_and_unacked(store: JobStore) -> None:
    from slmflow.fleet.queues import JOBS_QUEUE, publish_job, publisher
    from slmflow.settings import load_settings

    app = publisher(load_settings(redis_url="redis://127.0.0.1:6379/10"))
    publish_job(app, "a" * 32)
    publish_job(app, "b" * 32, resumed=True)
    raw = await store.redis.lindex(JOBS_QUEUE, 0)
    assert raw is not None
    for tag, job_id, delivered in (("t1", "c" * 32, time.time()), ("t2", "d" * 32, time.time() - 60)):
        await store.redis.hset(keys.UNACKED, tag, f'[{raw.replace("a" * 32, job_id)}, "", "slmflow.jobs"]')
        await store.redis.zadd(keys.UNACKED_INDEX, {tag: delivered})
    # A message delivered a minute ago and still unacked belongs to a dead worker: it does not count.
    assert await store.queued_messages(["slmflow.jobs", "slmflow.jobs.resume"]) == {"a" * 32, "b" * 32, "c" * 32}


async def test_an_oversized_event_keeps_its_kind_and_says_it_was_cut(store: JobStore) -> None:
    store.max_event_bytes = 1000
    await store.append_event(
        "j1", Event(kind="tool_called", step="s", data=ToolCalled(tool="t", key="x" * 5000, ok=True))
    )
    [event] = [e async for e in store.events("j1")]
    assert (event.kind, event.step, event.data.truncated) == ("tool_called", "s", True)


async def test_a_call_key_names_one_call_and_another_call_under_it_is_a_conflict(store: JobStore) -> None:
    await store.create(record(), None)
    token = await store.acquire_lease("j1", ttl_s=5)
    assert token is not None
    calls = JobCalls(store.redis, ttl_s=60)
    common = {"job_id": "j1", "step": "s", "idempotent": False, "trace": None}
    first = await calls.record("j1:s:1:slm:1:0", token, tool="refund", arguments={"order_id": "A", "n": 1}, **common)
    assert first == ("recorded", None)
    again = await calls.record("j1:s:1:slm:1:0", token, tool="refund", arguments={"n": 1, "order_id": "A"}, **common)
    assert again == ("recorded", None)  # the same call (argument order does not matter)
    other = await calls.record("j1:s:1:slm:1:0", token, tool="refund", arguments={"order_id": "B", "n": 1}, **common)
    assert other == ("conflict", {"tool": "refund"})
    swapped = await calls.record("j1:s:1:slm:1:0", token, tool="open_case", arguments={"order_id": "A"}, **common)
    assert swapped == ("conflict", {"tool": "refund"})
