"""The workers' Celery app: the shared configuration, slmflow's two tasks, and the worker hooks.

Two tasks: `slmflow.run_job` on the jobs queues (a job waits on models and tools, so a jobs
worker runs many at once on the threads pool, their I/O on one asyncio loop per process), and
`slmflow.run_tool` on `slmflow.tools` or a tool's own queue, run by separate tools workers so
that a job waiting on a tool never holds the slot the tool needs. Applications that only submit
jobs use `slmflow.fleet.queues.publisher` instead: no tasks, no worker code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import InvalidTaskError
from celery.signals import worker_ready, worker_shutting_down
from celery.worker.request import Request

from slmflow.fleet import tasks
from slmflow.fleet.process import jobs_runtime, started_jobs_runtime
from slmflow.fleet.queues import JOBS_QUEUE, RESUME_QUEUE, RUN_JOB, RUN_TOOL, celery_config
from slmflow.settings import Settings, load_settings

__all__ = ["CheckedRequest", "create_app"]


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from settings, with slmflow's tasks registered."""
    settings = settings or load_settings()
    app = Celery("slmflow", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(celery_config(settings))
    app.conf.slmflow_settings = settings
    # Store faults are handled by the runtime (the job is given back, never failed), and a lost
    # worker by the lease and the reconciler: the tasks themselves never retry.
    app.task(name=RUN_JOB, bind=True, Request=CheckedRequest)(tasks.run_job)
    app.task(name=RUN_TOOL, bind=True, soft_time_limit=settings.tool_time_limit_s - 10,
             time_limit=settings.tool_time_limit_s, Request=CheckedRequest)(tasks.run_tool)  # fmt: skip
    return app


class CheckedRequest(Request):  # type: ignore[misc]
    """A task message whose body is not Celery's `[args, kwargs, embed]` is refused, not run.

    Celery unpacks the body after it accepted the message; a malformed one (`{"a": 1}`, `[1]`)
    raised there and took the whole worker down, and, requeued, the next worker too.
    """

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        body = kwargs.get("body") if kwargs.get("decoded") else message.payload
        if not (isinstance(body, list | tuple) and len(body) == 3 and isinstance(body[0], list | tuple)
                and isinstance(body[1], dict) and isinstance(body[2], dict | type(None))):  # fmt: skip
            raise InvalidTaskError(f"refused a malformed task message (body {type(body).__name__})")
        super().__init__(message, *args, **kwargs)


def _start_jobs_runtime(sender: Any, **_: Any) -> None:
    """At worker start: a jobs worker also consumes the resume queue, and opens its runtime now."""
    app = sender.app
    consumer = sender.task_consumer
    queues = {queue.name for queue in consumer.queues} if consumer else set()
    if JOBS_QUEUE in queues and getattr(app.conf, "slmflow_settings", None) is not None:
        if RESUME_QUEUE not in queues:
            sender.add_task_queue(RESUME_QUEUE)
        jobs_runtime(app)


def _drain_jobs(**_: Any) -> None:
    """Warm shutdown began (SIGTERM): the jobs runtime drains within `SLMFLOW_DRAIN_S`."""
    runtime = started_jobs_runtime()
    if runtime is not None:
        runtime.drain()


worker_ready.connect(_start_jobs_runtime, weak=False)
worker_shutting_down.connect(_drain_jobs, weak=False)
