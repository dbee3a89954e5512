"""The two Celery tasks; both are thin: the work lives in the runtime and the executor."""

from __future__ import annotations

import threading
from typing import Any

import redis
from celery import Task

from slmflow.fleet.executor import execute_tool_task
from slmflow.jobs import NO_RESUME
from slmflow.project import find_project
from slmflow.settings import Settings
from slmflow.telemetry import setup_metrics, setup_tracing
from slmflow.tools import ToolRegistry

__all__ = ["run_job", "run_tool"]

_RESUME_KEY = "review_answer"


def run_job(self: Task, job_id: str, **options: Any) -> None:
    """Run (or resume) job `job_id` on this process's jobs runtime."""
    from slmflow.fleet.runtime import JobsRuntime

    resume = options[_RESUME_KEY] if _RESUME_KEY in options else NO_RESUME
    JobsRuntime.of(self.app).run(job_id, resume)


class _ToolsRuntime:
    """Per tools-worker process (after the fork): a Redis client and the project's tools."""

    _instance: _ToolsRuntime | None = None
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        setup_tracing("slmflow-tools-worker")  # here, after the fork: exporters own threads
        setup_metrics("slmflow-tools-worker")
        self.settings = settings
        self.client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        graphs = find_project(settings.project).load_all()
        specs = {name: spec for graph in graphs.values() for name in graph.tools.names()
                 for spec in [graph.tools.get(name)]}  # fmt: skip
        self.registry = ToolRegistry.of(specs.values())

    @classmethod
    def of(cls, settings: Settings) -> _ToolsRuntime:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(settings)
            return cls._instance


def run_tool(
    self: Task, tool: str, arguments: dict[str, Any], key: str, job_id: str, step: str,
    trace_context: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """Run one tool call (once per idempotency key) and store its outcome."""
    runtime = _ToolsRuntime.of(self.app.conf.slmflow_settings)
    execute_tool_task(runtime.client, runtime.registry, runtime.settings.job_ttl_s, tool, arguments, key, job_id,
                      step, trace_context)  # fmt: skip
