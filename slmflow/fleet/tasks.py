"""The two Celery tasks; both are thin: the work lives in the jobs runtime and the tools worker."""

from __future__ import annotations

from typing import Any

from celery import Task

from slmflow.fleet.process import jobs_runtime, tools_worker
from slmflow.jobs import NO_RESUME

__all__ = ["run_job", "run_tool"]

_RESUME_KEY = "review_answer"


def run_job(self: Task, job_id: str, **options: Any) -> None:
    """Run (or resume) job `job_id` on this process's jobs runtime."""
    resume = options[_RESUME_KEY] if _RESUME_KEY in options else NO_RESUME
    jobs_runtime(self.app).run(str(job_id), resume)


def run_tool(self: Task, key: str, trace_context: dict[str, str] | None = None, **_: Any) -> None:
    """Run the tool call recorded under `key` (once), and store its outcome."""
    tools_worker(self.app).run(str(key))
