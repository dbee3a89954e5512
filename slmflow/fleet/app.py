"""The Celery app: JSON only, late acks, prefetch 1, timeouts ordered below the visibility timeout.

Two tasks, two queues: `slmflow.run_job` on `slmflow.jobs` (a job waits on models and tools, so
a jobs worker runs many at once on the threads pool, their I/O on one asyncio loop per process),
and `slmflow.run_tool` on `slmflow.tools` or a tool's own queue (`SLMFLOW_TOOL_QUEUES`), run by
separate tools workers so that a job waiting on a tool never holds the slot the tool needs.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from slmflow.settings import Settings, load_settings

__all__ = ["JOBS_QUEUE", "RUN_JOB", "RUN_TOOL", "TOOLS_QUEUE", "create_app", "enqueue_job", "tool_queue"]

JOBS_QUEUE = "slmflow.jobs"
TOOLS_QUEUE = "slmflow.tools"
RUN_JOB = "slmflow.run_job"
RUN_TOOL = "slmflow.run_tool"


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from settings, with slmflow's tasks registered."""
    settings = settings or load_settings()
    app = Celery("slmflow", broker=settings.redis_url, backend=settings.redis_url)
    visibility = {"visibility_timeout": settings.visibility_timeout_s}
    job_hard_limit = settings.job_timeout_s + 60
    app.conf.update(
        # Never pickle: a message is data, not code.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task is acknowledged when it ends, and requeued if its worker dies mid-run.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # outcomes live in the job store, not Celery's backend
        # HTTP timeout < job deadline (in code) < soft < hard limit < visibility timeout (checked
        # in Settings): else a live task is delivered a second time.
        task_soft_time_limit=job_hard_limit - 30,
        task_time_limit=job_hard_limit,
        broker_transport_options=visibility,
        result_backend_transport_options=visibility,
        visibility_timeout=settings.visibility_timeout_s,
        task_default_queue=JOBS_QUEUE,
        task_routes={RUN_JOB: {"queue": JOBS_QUEUE}, RUN_TOOL: {"queue": TOOLS_QUEUE}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    app.conf.slmflow_settings = settings
    _register_tasks(app)
    return app


def _start_jobs_runtime(sender: Any, **_: Any) -> None:
    """At worker start: a jobs worker opens its runtime now, so it publishes its graphs at once."""
    app = sender.app
    queues = {queue.name for queue in sender.task_consumer.queues} if sender.task_consumer else set()
    if JOBS_QUEUE in queues and getattr(app.conf, "slmflow_settings", None) is not None:
        from slmflow.fleet.runtime import JobsRuntime

        JobsRuntime.of(app)


worker_ready.connect(_start_jobs_runtime, weak=False)


def _register_tasks(app: Celery) -> None:
    # Imported here: the tasks module needs the app, and the SDK side never runs them.
    from slmflow.fleet import tasks

    settings: Settings = app.conf.slmflow_settings
    # Retries with backoff and jitter for transient broker/store errors only; a job's own failures
    # are recorded on the job, and a lost worker is handled by the lease and the sweeper.
    transient = {"autoretry_for": (redis.ConnectionError, redis.TimeoutError), "retry_backoff": True,
                 "retry_jitter": True, "max_retries": 5}  # fmt: skip
    app.task(name=RUN_JOB, bind=True, **transient)(tasks.run_job)
    app.task(
        name=RUN_TOOL, bind=True, soft_time_limit=settings.tool_time_limit_s - 10,
        time_limit=settings.tool_time_limit_s, **transient,
    )(tasks.run_tool)  # fmt: skip


def tool_queue(settings: Settings, tool: str) -> str:
    """The queue a tool's calls go to."""
    return settings.tool_queues.get(tool, TOOLS_QUEUE)


def enqueue_job(app: Celery, job_id: str, **options: Any) -> None:
    """Publish `run_job` for a recorded job: the one way a job reaches the jobs queue."""
    app.send_task(RUN_JOB, args=[job_id], kwargs=options, queue=JOBS_QUEUE)
