"""The jobs worker's tool executor: record the call, publish it, wait for its outcome.

Each call is recorded under its key (`ToolContext.key`) before it is published, so a job that
resumes after a crash, or a task delivered twice, finds the call and its outcome instead of
running the side effect again (see `slmflow.fleet.calls` for the call's life).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery

from slmflow import telemetry
from slmflow.errors import SlmflowError, ToolError, ToolFailed, ToolOutcomeUnknown, ToolTimeout, UsageError
from slmflow.events import Event, ToolCalled
from slmflow.fleet.calls import JobCalls
from slmflow.fleet.queues import TOOL_GRACE_S, publish_tool, tool_queue
from slmflow.fleet.store import LeaseLost, current_lease
from slmflow.settings import Settings
from slmflow.tools import ToolContext, ToolSpec

__all__ = ["CeleryToolExecutor"]

log = logging.getLogger("slmflow.worker")
_PICKUP_ROUNDS = 3
"""Publishes of a call nobody picks up (each waited for the tool's timeout) before the job gives up."""
_POLL_S = 2.0


class CeleryToolExecutor:
    """Runs each call as a `run_tool` task on the tool's queue and waits for its stored outcome."""

    def __init__(
        self, app: Celery, calls: JobCalls, settings: Settings, emit: Callable[[Event], Awaitable[None]]
    ) -> None:
        self.app, self.calls, self.settings, self.emit = app, calls, settings, emit

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Record (unless already), dispatch and wait; raise the tool's error as a `ToolError`."""
        job_id, token = _lease(context)
        trace = telemetry.carrier()  # the tool's span joins the job's trace
        state, outcome = await self.calls.record(
            context.key, token, tool=spec.name, arguments=arguments, job_id=job_id, step=context.step,
            idempotent=spec.idempotent, trace=trace, config=dict(context.config),
        )  # fmt: skip
        if state == "lost":
            raise LeaseLost(job_id, "recording a tool call")
        if state == "conflict":
            other = (outcome or {}).get("tool") or "?"
            raise ToolFailed(f"call key {context.key} is already recorded for another call (of {other}); "
                             "it did not run: a key must name one call", tool=spec.name, key=context.key)  # fmt: skip
        if outcome is None:
            outcome = await self._dispatch(spec, arguments, context, state, trace)
        await self.emit(Event(kind="tool_called", step=context.step, data=ToolCalled(
            tool=spec.name, key=context.key, ok=outcome["ok"], worker=outcome.get("worker"),
        )))  # fmt: skip
        if outcome["ok"]:
            return outcome["result"]
        error = SlmflowError.from_dict(outcome["error"])
        raise error if isinstance(error, ToolError) else ToolFailed(str(error), tool=spec.name)

    async def resolve(self, job_id: str, key: str, answer: dict[str, Any]) -> None:
        """Settle an unknown outcome with a reviewer's answer (`{"result": ...}` or `{"retry": true}`)."""
        lease = current_lease.get()
        if lease is None or lease[0] != job_id or await self.calls.resolve(key, job_id, lease[1], answer) == "lost":
            raise LeaseLost(job_id, "settling a tool call")

    async def _dispatch(
        self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext, state: str, trace: dict[str, str]
    ) -> dict[str, Any]:
        queue = tool_queue(self.settings, spec.name)
        if state in ("unknown", "abandoned"):
            raise _unknown(spec, arguments, context) if state == "unknown" else _never_ran(spec, queue, context)
        publish_tool(self.app, queue, context.key, spec.timeout, trace)
        pickup_s, republished, unclaimed_since = spec.timeout + 2 * TOOL_GRACE_S, 0, time.monotonic()
        while True:
            # Short waits: a running call's heartbeat says within seconds whether its run died.
            outcome = await self.calls.wait(context.key, _POLL_S)
            if outcome is not None:
                return outcome
            overdue = time.monotonic() - unclaimed_since > pickup_s
            if overdue and await self.calls.waiting(queue, context.key, pickup_s):
                unclaimed_since = time.monotonic()  # a backlog on the tools queue, not a lost message
                continue
            verdict = await self.calls.expire(context.key, give_up=overdue and republished >= _PICKUP_ROUNDS)
            if verdict == "unknown":
                # Its heartbeat stopped: the run died, or only its link to Redis did. It is never run
                # again; a run that was alive reports within its hard limit, so wait that long first.
                late = await self.calls.wait(context.key, spec.timeout + TOOL_GRACE_S)
                if late is not None:
                    return late
                raise _unknown(spec, arguments, context)
            if verdict == "abandoned":
                raise _never_ran(spec, queue, context)
            if verdict == "busy":
                unclaimed_since = time.monotonic()
            elif verdict == "retry" or (verdict == "recorded" and overdue):
                # An idempotent run died, or nobody picked the call up (a lost message): publish again.
                log.warning("tool call %s: %s; publishing it again", context.key,
                            "its run died" if verdict == "retry" else "not picked up")  # fmt: skip
                publish_tool(self.app, queue, context.key, spec.timeout, trace)
                republished, unclaimed_since = republished + 1, time.monotonic()


def _lease(context: ToolContext) -> tuple[str, int]:
    lease = current_lease.get()
    if lease is None or lease[0] != context.job_id:
        raise UsageError(f"tool call {context.key} made outside a leased job run")
    return lease


def _unknown(spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> ToolOutcomeUnknown:
    return ToolOutcomeUnknown(
        f"{spec.name} was interrupted mid-run and is not idempotent: it may or may not have run. Answer the "
        "review with {\"result\": ...} (what it returned) or {\"retry\": true} (run it again)",
        tool=spec.name, key=context.key, arguments=arguments, job_id=context.job_id, step=context.step,
    )  # fmt: skip


def _never_ran(spec: ToolSpec, queue: str, context: ToolContext) -> ToolTimeout:
    return ToolTimeout(
        f"no tools worker picked up {spec.name} from queue {queue!r} (is one running?); "
        "the call was abandoned and will never run",
        tool=spec.name, key=context.key,
    )  # fmt: skip
