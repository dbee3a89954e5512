"""The tools worker's side of a call: claim the recorded call, run it once, store its outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import redis

from slmflow.errors import ToolError, UnknownTool
from slmflow.fleet import keys
from slmflow.fleet.calls import CallRecord, ToolsCalls
from slmflow.fleet.queues import TOOL_GRACE_S
from slmflow.project import find_project
from slmflow.settings import Settings
from slmflow.telemetry import setup_metrics, setup_tracing
from slmflow.tools import InProcessExecutor, ToolContext, ToolRegistry

__all__ = ["ToolsWorker", "context_of"]

log = logging.getLogger("slmflow.worker")


def context_of(call: CallRecord) -> ToolContext:
    """The `ToolContext` a recorded call was made in (its key names run, tier, attempt and index)."""
    prefix = f"{call.job_id}:{call.step}:"
    run, tier, attempt, index = call.key.removeprefix(prefix).split(":")
    return ToolContext(call.job_id, call.step, int(index), int(run), tier, int(attempt), trace_parent=call.trace)


class ToolsWorker:
    """Per tools-worker process (after the fork): a Redis client and the project's tools."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("slmflow-tools-worker")  # here, after the fork: exporters own threads
        setup_metrics("slmflow-tools-worker")
        self.settings = settings
        self.calls = ToolsCalls(redis.Redis.from_url(settings.redis_url, decode_responses=True,
                                                     socket_connect_timeout=2, socket_timeout=10))  # fmt: skip
        graphs = find_project(settings.project).load_all()
        specs = {name: graph.tools.get(name) for graph in graphs.values() for name in graph.tools.names()}
        self.registry = ToolRegistry.of(specs.values())
        self.runner = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, key: str) -> None:
        """Run the call recorded under `key`, if it is this worker's to run."""
        timeout = self._timeout_of(key)
        verdict, call = self.calls.claim(key, self.runner, timeout + 2 * TOOL_GRACE_S)
        if verdict == "forged":
            log.warning("refused run_tool %r: no such call was recorded by a jobs worker", key[:200])
            return
        if call is None:
            if verdict in ("done", "unknown"):
                self.calls.wake(key)
            return
        self.calls.finish(key, self.runner, self._outcome(call))

    def _timeout_of(self, key: str) -> float:
        tool = self.calls.redis.hget(keys.call(key), "tool")
        try:
            return self.registry.get(str(tool)).timeout if tool else 0.0
        except UnknownTool:
            return 0.0

    def _outcome(self, call: CallRecord) -> dict[str, Any]:
        try:
            spec = self.registry.get(call.tool)
            valid = spec.validate(call.arguments)  # validated again here: defence in depth
            result = asyncio.run(InProcessExecutor().run(spec, valid, context_of(call)))
            return {"ok": True, "result": result, "worker": self.runner}
        except ToolError as exc:
            return {"ok": False, "error": exc.to_dict(), "worker": self.runner}
