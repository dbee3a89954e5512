"""Tool calls as Celery tasks: dispatched to the tool's queue, results kept by idempotency key.

A call's key is (job id, step, call index). Its outcome is stored under that key by the task, so a
job that resumes after a crash, or a task delivered twice, reads the stored outcome instead of
running the side effect again.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from celery import Celery

from slmflow import telemetry
from slmflow.errors import SlmflowError, ToolError, ToolFailed, ToolTimeout
from slmflow.events import Event
from slmflow.fleet.app import RUN_TOOL, tool_queue
from slmflow.fleet.store import JobStore, P
from slmflow.settings import Settings
from slmflow.tools import InProcessExecutor, ToolContext, ToolRegistry, ToolSpec

__all__ = ["CeleryToolExecutor", "execute_tool_task"]

_GRACE_S = 10.0  # queueing and pickup time on top of the tool's own timeout


class CeleryToolExecutor:
    """Runs each call as a `run_tool` task on the tool's queue and waits for its stored outcome."""

    def __init__(
        self, app: Celery, store: JobStore, settings: Settings, emit: Callable[[Event], Awaitable[None]]
    ) -> None:
        self.app, self.store, self.settings, self.emit = app, store, settings, emit

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Dispatch (unless already done) and wait; raise the tool's error as a `ToolError`."""
        outcome = await self.store.tool_result(context.key)
        if outcome is None:
            self.app.send_task(
                RUN_TOOL,
                kwargs={
                    "tool": spec.name,
                    "arguments": arguments,
                    "key": context.key,
                    "job_id": context.job_id,
                    "step": context.step,
                    "trace_context": telemetry.carrier(),  # the tool's span joins the job's trace
                },
                queue=tool_queue(self.settings, spec.name),
            )
            outcome = await self.store.wait_tool_result(context.key, spec.timeout + _GRACE_S)
            if outcome is None:
                raise ToolTimeout(f"{spec.name} did not report within {spec.timeout + _GRACE_S:g}s", tool=spec.name)
        await self.emit(Event(kind="tool_called", step=context.step, data={
            "tool": spec.name, "key": context.key, "ok": outcome["ok"], "worker": outcome.get("worker"),
        }))  # fmt: skip
        if outcome["ok"]:
            return outcome["result"]
        error = SlmflowError.from_dict(outcome["error"])
        raise error if isinstance(error, ToolError) else ToolFailed(str(error), tool=spec.name)


def execute_tool_task(
    client: redis.Redis, registry: ToolRegistry, ttl_s: int, tool: str, arguments: dict[str, Any], key: str,
    job_id: str, step: str, trace_context: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """The body of `run_tool`: run once per key, store the outcome, wake the waiting job."""
    if client.exists(f"{P}tool:{key}"):
        _wake(client, key)
        return
    spec = registry.get(tool)
    # One run per key even if the message is delivered twice at once: the second defers to the first.
    if not client.set(f"{P}toolrun:{key}", os.getpid(), nx=True, ex=int(spec.timeout + _GRACE_S)):
        return
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        valid = spec.validate(arguments)  # validated again here: a message is not trusted input
        context = ToolContext(job_id, step, 0, trace_parent=trace_context)
        result = asyncio.run(InProcessExecutor().run(spec, valid, context))
        outcome = {"ok": True, "result": result, "worker": worker}
    except ToolError as exc:
        outcome = {"ok": False, "error": exc.to_dict(), "worker": worker}
    client.set(f"{P}tool:{key}", json.dumps(outcome, default=str), ex=ttl_s)
    _wake(client, key)


def _wake(client: redis.Redis, key: str) -> None:
    client.rpush(f"{P}tooldone:{key}", 1)
    client.expire(f"{P}tooldone:{key}", 60)
