"""The tools worker's side of a call: claim the recorded call, run it once, store its outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from slmflow.errors import ToolError, UnknownTool
from slmflow.fleet.calls import CallRecord, ToolsCalls
from slmflow.fleet.queues import TOOL_GRACE_S
from slmflow.project import find_project
from slmflow.settings import Settings
from slmflow.telemetry import setup_metrics, setup_tracing
from slmflow.tools import InProcessExecutor, ToolContext, ToolRegistry

__all__ = ["ALIVE_S", "ToolsWorker", "context_of"]

log = logging.getLogger("slmflow.worker")
ALIVE_S = 3.0
"""How long a running call counts as alive after its runner's last heartbeat (one a second)."""


def context_of(call: CallRecord) -> ToolContext:
    """The `ToolContext` a recorded call was made in (its key names run, tier, attempt and index)."""
    prefix = f"{call.job_id}:{call.step}:"
    run, tier, attempt, index = call.key.removeprefix(prefix).split(":")
    return ToolContext(
        call.job_id, call.step, int(index), int(run), tier, int(attempt), trace_parent=call.trace, config=call.config
    )


class ToolsWorker:
    """Per tools-worker process (after the fork): a Redis client and the project's tools."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("slmflow-tools-worker", capture=settings.capture_content)  # after the fork: exporters own threads
        setup_metrics("slmflow-tools-worker")
        self.settings = settings
        # Retries for about a minute: a call's outcome must outlive a Redis restart, or a run that
        # happened would later look unknown.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), 40)
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=2,
                                      socket_timeout=10, retry=retry,
                                      retry_on_error=[redis.ConnectionError, redis.TimeoutError])  # fmt: skip
        self.calls = ToolsCalls(client)
        graphs = find_project(settings.project).load_all()
        specs = {name: graph.tools.get(name) for graph in graphs.values() for name in graph.tools.names()}
        self.registry = ToolRegistry.of(specs.values())
        self.runner = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, key: str) -> None:
        """Run the call recorded under `key`, if it is this worker's to run."""
        verdict, call = self.calls.claim(key, self.runner, ALIVE_S)
        if verdict == "forged":
            log.warning("refused run_tool %r: no such call was recorded by a jobs worker", key[:200])
            return
        if call is None:
            if verdict in ("done", "unknown"):
                self.calls.wake(key)
            return
        with self._heartbeat(key, self._timeout_of(call.tool) + TOOL_GRACE_S):
            outcome = self._outcome(call)
        self.calls.finish(key, self.runner, outcome)

    @contextmanager
    def _heartbeat(self, key: str, at_most_s: float) -> Iterator[None]:
        """Renew the call's deadline every second while it runs, for at most `at_most_s`."""
        done = threading.Event()

        def beat() -> None:
            until = time.monotonic() + at_most_s
            while not done.wait(1.0) and time.monotonic() < until:
                try:
                    if not self.calls.renew(key, self.runner, ALIVE_S):
                        return
                except Exception as exc:  # Redis away: the call may be judged dead; its outcome still lands
                    log.warning("heartbeat of call %s failed: %s", key[:200], exc)

        thread = threading.Thread(target=beat, name="slmflow-call-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=2)

    def _timeout_of(self, tool: str) -> float:
        try:
            return self.registry.get(tool).timeout
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
