"""Queue and task names, the Celery configuration both sides share, and publishing.

The bottom of the fleet: the SDK publishes jobs with this module alone (it never imports the
worker half), and the workers publish tool calls and resumed jobs with it too.

- `slmflow.jobs`: new jobs. `slmflow.jobs.resume`: jobs handed back (a lapsed lease, a drain, a
  lost message, a review): every jobs worker consumes it beside `slmflow.jobs`, so a resumed job
  waits behind at most a message or two, not behind the whole backlog.
- `slmflow.tools` (or a tool's own queue from `SLMFLOW_TOOL_QUEUES`): tool calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slmflow.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "JOBS_QUEUE",
    "JOB_QUEUES",
    "RESUME_QUEUE",
    "RUN_JOB",
    "RUN_TOOL",
    "TOOLS_QUEUE",
    "TOOL_GRACE_S",
    "celery_config",
    "publish_job",
    "publish_tool",
    "publisher",
    "tool_queue",
]

JOBS_QUEUE = "slmflow.jobs"
RESUME_QUEUE = "slmflow.jobs.resume"
JOB_QUEUES = (RESUME_QUEUE, JOBS_QUEUE)
TOOLS_QUEUE = "slmflow.tools"
RUN_JOB = "slmflow.run_job"
RUN_TOOL = "slmflow.run_tool"
TOOL_GRACE_S = 5.0
"""A tool task's hard limit is its tool's timeout plus this; its run is surely over after twice it."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """What every process of the fleet agrees on: JSON only, late acks, limits below the visibility timeout."""
    visibility = {"visibility_timeout": settings.visibility_timeout_s}
    job_hard_limit = settings.job_timeout_s + 60
    return {
        # Never pickle: a message is data, not code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task is acknowledged when it ends, and requeued if its worker dies mid-run.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Outcomes live in the job store, not Celery's backend; each message says so too (below),
        # and the one backend object is shared by the threads pool's threads (not built per thread).
        "task_ignore_result": True,
        "result_backend_thread_safe": True,
        # HTTP timeout < job deadline (in code) < soft < hard limit < visibility timeout (checked
        # in Settings): else a live task is delivered a second time.
        "task_soft_time_limit": job_hard_limit - 30,
        "task_time_limit": job_hard_limit,
        "broker_transport_options": visibility,
        "result_backend_transport_options": visibility,
        "visibility_timeout": settings.visibility_timeout_s,
        "task_default_queue": JOBS_QUEUE,
        "task_routes": {RUN_JOB: {"queue": JOBS_QUEUE}, RUN_TOOL: {"queue": TOOLS_QUEUE}},
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "worker_hijack_root_logger": False,
        # A threads-pool task cannot be cancelled, and the lease already covers a worker that
        # lost Redis: cancelling on connection loss only took workers down.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def publisher(settings: Settings) -> Celery:
    """A Celery app that only publishes (the SDK's): configured like the workers, no tasks."""
    from celery import Celery  # here, not at import: an SDK that only reads jobs never loads Celery

    app = Celery("slmflow", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(celery_config(settings))
    return app


def tool_queue(settings: Settings, tool: str) -> str:
    """The queue a tool's calls go to."""
    return settings.tool_queues.get(tool, TOOLS_QUEUE)


def publish_job(app: Celery, job_id: str, *, resumed: bool = False, **options: Any) -> None:
    """Publish `run_job` for a recorded job: the one way a job reaches a jobs queue."""
    app.send_task(RUN_JOB, args=[job_id], kwargs=options, queue=RESUME_QUEUE if resumed else JOBS_QUEUE,
                  ignore_result=True)  # fmt: skip


def publish_tool(app: Celery, queue: str, key: str, timeout_s: float, trace: dict[str, str] | None) -> None:
    """Publish `run_tool` for a recorded call; the message carries only its key (and trace context)."""
    app.send_task(
        RUN_TOOL, kwargs={"key": key, "trace_context": trace}, queue=queue,
        time_limit=timeout_s + TOOL_GRACE_S, soft_time_limit=timeout_s + 1, ignore_result=True,
    )  # fmt: skip
