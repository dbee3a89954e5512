"""Tool call records: a call is recorded by the jobs worker before any tools worker may run it.

A call's life, one Redis hash per key (`ToolContext.key`: job, step, run, tier, attempt, index):

    recorded ──claim──▶ running ──finish──▶ done
        │                  │
        │                  └─ its run died (deadline passed): idempotent → recorded (run again)
        │                                                       otherwise → unknown (never re-run)
        └─ nobody ran it in time, the job gave up on it → abandoned (never run later)

A running call's runner renews its deadline every second (a heartbeat, for at most the tool's
timeout plus a grace), so a killed tools worker's call is known to have died within seconds.

The jobs worker records the call only while it holds the job's lease (so only a granted,
validated call is ever recorded); a tools worker runs only a recorded call of a job that is
running with a live lease, and takes the arguments from the record, not from the message: a
forged message runs nothing. An `unknown` outcome pauses the job for review; the reviewer says
what the call returned, or asks for it to run again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from slmflow.fleet import keys, lua

__all__ = ["CallRecord", "JobCalls", "ToolsCalls"]


def _ms(seconds_from_now: float = 0.0) -> int:
    return int((time.time() + seconds_from_now) * 1000)


@dataclass(frozen=True)
class CallRecord:
    """A recorded call as a tools worker reads it."""

    key: str
    tool: str
    arguments: dict[str, Any]
    job_id: str
    step: str
    trace: dict[str, str] | None
    config: dict[str, Any] = field(default_factory=dict)


class JobCalls:
    """The jobs worker's side (async): record a call, wait for its outcome, settle it."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.redis, self.ttl = client, ttl_s
        self._record = client.register_script(lua.RECORD_CALL)
        self._expire = client.register_script(lua.EXPIRE_CALL)
        self._resolve = client.register_script(lua.RESOLVE_CALL)

    async def record(
        self, key: str, token: int, *, tool: str, arguments: dict[str, Any], job_id: str, step: str,
        idempotent: bool, trace: dict[str, str] | None, config: dict[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any] | None]:  # fmt: skip
        """Record the call (fenced by the lease); returns its state and, once done, its outcome
        (`conflict` and `{"tool": ...}`: the key is recorded for another call)."""
        state, outcome = cast("list[str]", await self._record(
            keys=[keys.lease(job_id), keys.call(key)],
            args=[token, tool, json.dumps(arguments, sort_keys=True), job_id, step, "1" if idempotent else "0",
                  json.dumps(trace or {}), self.ttl, json.dumps(config or {})],
        ))  # fmt: skip
        if state == "conflict":
            return state, {"tool": outcome}
        return state, json.loads(outcome) if outcome else None

    async def outcome(self, key: str) -> dict[str, Any] | None:
        """The call's outcome, once done."""
        state, outcome = cast("list[str | None]", await self.redis.hmget(keys.call(key), ["state", "outcome"]))
        return json.loads(outcome) if state == "done" and outcome else None

    async def wait(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        """Wait for the call's outcome (woken by its task), or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if (outcome := await self.outcome(key)) is not None:
                return outcome
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self.redis.blpop([keys.call_done(key)], timeout=min(left, 1.0))

    async def waiting(self, queue: str, key: str, delivered_within_s: float) -> bool:
        """Whether a `run_tool` message for the call waits in `queue`, or was delivered a moment ago.

        A tools worker killed with messages it had taken keeps them in kombu's `unacked` hash until
        the visibility timeout: those count only while younger than `delivered_within_s`.
        """
        needle = f"'key': '{key}'"  # Celery's kwargsrepr header, in the message as plain text
        start = 0
        while batch := cast("list[str]", await self.redis.lrange(queue, start, start + 999)):
            if any(needle in raw for raw in batch):
                return True
            start += len(batch)
        since = time.time() - delivered_within_s
        recent = cast("list[str]", await self.redis.zrangebyscore(keys.UNACKED_INDEX, since, "+inf"))
        delivered = cast("list[str | None]", await self.redis.hmget(keys.UNACKED, recent)) if recent else []
        return any(raw and needle in raw for raw in delivered)

    async def expire(self, key: str, *, give_up: bool) -> str:
        """What to do about a call with no outcome in time (see `lua.EXPIRE_CALL`)."""
        return str(await self._expire(keys=[keys.call(key)], args=[_ms(), "1" if give_up else "0"]))

    async def resolve(self, key: str, job_id: str, token: int, answer: dict[str, Any]) -> str:
        """A reviewer's answer to an unknown outcome: `{"retry": true}` or `{"result": ...}`."""
        if answer.get("retry"):
            mode, outcome = "retry", ""
        else:
            mode, outcome = "outcome", json.dumps({"ok": True, "result": answer.get("result"), "worker": "review"})
        return str(await self._resolve(keys=[keys.lease(job_id), keys.call(key)], args=[token, mode, outcome]))


class ToolsCalls:
    """The tools worker's side (sync, one client per process): claim a recorded call, finish it."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._claim = client.register_script(lua.CLAIM_CALL)
        self._finish = client.register_script(lua.FINISH_CALL)
        self._renew = client.register_script(lua.RENEW_CALL)

    def claim(self, key: str, runner: str, run_s: float) -> tuple[str, CallRecord | None]:
        """'run' and the call to run, or why not: forged, idle_job, busy, done, unknown, abandoned."""
        fields = cast("dict[str, str]", self.redis.hgetall(keys.call(key)))
        if not fields:
            return "forged", None
        job_id = fields["job_id"]
        verdict = str(self._claim(keys=[keys.call(key), keys.job(job_id), keys.lease(job_id)],
                                  args=[runner, _ms(), int(run_s * 1000)]))  # fmt: skip
        if verdict != "run":
            return verdict, None
        trace = json.loads(fields.get("trace") or "{}") or None
        call = CallRecord(
            key,
            fields["tool"],
            json.loads(fields["arguments"]),
            job_id,
            fields["step"],
            trace,
            json.loads(fields.get("config") or "{}"),
        )
        return verdict, call

    def renew(self, key: str, runner: str, alive_s: float) -> bool:
        """The run is alive for `alive_s` more (its heartbeat); False once it is not ours any more."""
        return bool(self._renew(keys=[keys.call(key)], args=[runner, _ms(alive_s)]))

    def finish(self, key: str, runner: str, outcome: dict[str, Any]) -> None:
        """Store the call's outcome (the first one wins) and wake the waiting job."""
        self._finish(keys=[keys.call(key), keys.call_done(key)], args=[runner, json.dumps(outcome, default=str)])

    def wake(self, key: str) -> None:
        """Wake the waiting job (a duplicate delivery of a settled call)."""
        self.redis.rpush(keys.call_done(key), 1)
        self.redis.expire(keys.call_done(key), 60)
