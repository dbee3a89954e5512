"""Per-process worker state, in one place: the jobs runtime and the tools worker of this process.

Each is made on first use (at worker start for a jobs worker, so it publishes its graphs at once;
after the fork for a prefork tools worker) and lives as long as the process.
"""

from __future__ import annotations

import threading

from celery import Celery

from slmflow.fleet.runtime import JobsRuntime
from slmflow.fleet.tools_worker import ToolsWorker

__all__ = ["jobs_runtime", "started_jobs_runtime", "tools_worker"]

_lock = threading.Lock()
_jobs: JobsRuntime | None = None
_tools: ToolsWorker | None = None


def jobs_runtime(app: Celery) -> JobsRuntime:
    """This process's jobs runtime."""
    global _jobs
    with _lock:
        if _jobs is None:
            _jobs = JobsRuntime(app)
        return _jobs


def started_jobs_runtime() -> JobsRuntime | None:
    """The jobs runtime if this process started one (a tools worker has none)."""
    return _jobs


def tools_worker(app: Celery) -> ToolsWorker:
    """This process's tools worker."""
    global _tools
    with _lock:
        if _tools is None:
            _tools = ToolsWorker(app.conf.slmflow_settings)
        return _tools
