"""The workers' Celery app: the shared configuration, slmflow's two tasks, and the worker hooks.

Two tasks: `slmflow.run_job` on the jobs queues (a job waits on models and tools, so a jobs
worker runs many at once on the threads pool, their I/O on one asyncio loop per process), and
`slmflow.run_tool` on `slmflow.tools` or a tool's own queue, run by separate tools workers so
that a job waiting on a tool never holds the slot the tool needs. Applications that only submit
jobs use `slmflow.fleet.queues.publisher` instead: no tasks, no worker code.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.exceptions import InvalidTaskError
from celery.signals import worker_ready, worker_shutting_down
from celery.worker.request import Request

from slmflow.fleet import tasks
from slmflow.fleet.health import HEARTBEAT_S, WorkerHealth, serve
from slmflow.fleet.process import jobs_runtime, started_jobs_runtime
from slmflow.fleet.queues import JOBS_QUEUE, RESUME_QUEUE, RUN_JOB, RUN_TOOL, TOOL_GRACE_S, celery_config
from slmflow.fleet.runtime import LOOP_STALL_S
from slmflow.settings import Settings, load_settings

__all__ = ["CheckedRequest", "create_app"]

log = logging.getLogger("slmflow.worker")


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


_health: list[WorkerHealth] = []
"""This worker process's health, once it is ready (one per process)."""


def _on_worker_ready(sender: Any, **_: Any) -> None:
    """At worker start: a jobs worker also consumes the resume queue, and opens its runtime now;
    every worker serves its health endpoint."""
    app = sender.app
    settings = getattr(app.conf, "slmflow_settings", None)
    if settings is None:
        return
    consumer = sender.task_consumer
    queues = {queue.name for queue in consumer.queues} if consumer else set()
    slots = sender.controller.concurrency if sender.controller else 0
    if JOBS_QUEUE in queues:
        if RESUME_QUEUE not in queues:
            sender.add_task_queue(RESUME_QUEUE)
        runtime = jobs_runtime(app)
        health = WorkerHealth("jobs", slots, settings.job_timeout_s + 60, loop_answered=runtime.answered_at,
                              loop_stall_s=LOOP_STALL_S)  # fmt: skip
        runtime.observers.append(health.observe)
        runtime.slots = slots
    else:
        health = WorkerHealth("tools", slots, settings.tool_time_limit_s + TOOL_GRACE_S)
    sender.timer.call_repeatedly(HEARTBEAT_S, health.tick)
    health.ready = True
    _health.append(health)
    if settings.health_port:
        try:
            serve(health, settings.health_port)
        except OSError as exc:  # another worker on this host has it: this one runs on, unprobed
            log.warning("no health endpoint: port %d: %s (give each worker on a host its own SLMFLOW_HEALTH_PORT, "
                        "or 0 for none)", settings.health_port, exc.strerror or exc)  # fmt: skip


def _drain_jobs(**_: Any) -> None:
    """Warm shutdown began (SIGTERM): not ready any more; the jobs runtime drains within `SLMFLOW_DRAIN_S`."""
    for health in _health:
        health.draining = True
    runtime = started_jobs_runtime()
    if runtime is not None:
        runtime.drain()


worker_ready.connect(_on_worker_ready, weak=False)
worker_shutting_down.connect(_drain_jobs, weak=False)
