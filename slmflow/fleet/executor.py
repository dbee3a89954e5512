"""The jobs worker's tool executor: record the call, publish it, wait for its outcome.

Each call is recorded under its key (`ToolContext.key`) before it is published, so a job that
resumes after a crash, or a task delivered twice, finds the call and its outcome instead of
running the side effect again (see `slmflow.fleet.calls` for the call's life).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery

from slmflow import telemetry
from slmflow.errors import SlmflowError, ToolError, ToolFailed, ToolOutcomeUnknown, ToolTimeout, UsageError
from slmflow.events import Event
from slmflow.fleet.calls import JobCalls
from slmflow.fleet.queues import TOOL_GRACE_S, publish_tool, tool_queue
from slmflow.fleet.store import LeaseLost, current_lease
from slmflow.settings import Settings
from slmflow.tools import ToolContext, ToolSpec

__all__ = ["CeleryToolExecutor"]

log = logging.getLogger("slmflow.worker")
_PICKUP_ROUNDS = 3
"""Waits of a tool's deadline for a call nobody picked up before the job gives up on it."""


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
            idempotent=spec.idempotent, trace=trace,
        )  # fmt: skip
        if state == "lost":
            raise LeaseLost(job_id)
        if outcome is None:
            outcome = await self._dispatch(spec, arguments, context, state, trace)
        await self.emit(Event(kind="tool_called", step=context.step, data={
            "tool": spec.name, "key": context.key, "ok": outcome["ok"], "worker": outcome.get("worker"),
        }))  # fmt: skip
        if outcome["ok"]:
            return outcome["result"]
        error = SlmflowError.from_dict(outcome["error"])
        raise error if isinstance(error, ToolError) else ToolFailed(str(error), tool=spec.name)

    async def resolve(self, job_id: str, key: str, answer: dict[str, Any]) -> None:
        """Settle an unknown outcome with a reviewer's answer (`{"result": ...}` or `{"retry": true}`)."""
        lease = current_lease.get()
        if lease is None or lease[0] != job_id or await self.calls.resolve(key, job_id, lease[1], answer) == "lost":
            raise LeaseLost(job_id)

    async def _dispatch(
        self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext, state: str, trace: dict[str, str]
    ) -> dict[str, Any]:
        queue = tool_queue(self.settings, spec.name)
        if state in ("unknown", "abandoned"):
            raise _unknown(spec, arguments, context) if state == "unknown" else _never_ran(spec, queue, context)
        publish_tool(self.app, queue, context.key, spec.timeout, trace)
        unclaimed = 0
        while True:
            # A run is surely over (finished or killed by its hard limit) after timeout + 2 graces.
            outcome = await self.calls.wait(context.key, spec.timeout + 2 * TOOL_GRACE_S)
            if outcome is not None:
                return outcome
            unclaimed += 1
            verdict = await self.calls.expire(context.key, give_up=unclaimed >= _PICKUP_ROUNDS)
            if verdict == "unknown":
                raise _unknown(spec, arguments, context)
            if verdict == "abandoned":
                raise _never_ran(spec, queue, context)
            if verdict in ("recorded", "retry"):
                log.warning("tool call %s: no outcome yet (%s); publishing it again", context.key, verdict)
                publish_tool(self.app, queue, context.key, spec.timeout, trace)
            elif verdict == "busy":
                unclaimed = 0
            elif verdict == "done":
                continue


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
