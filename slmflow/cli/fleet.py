"""`slmflow worker`: start a worker of the fleet (a thin wrapper over the Celery app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slmflow.fleet.app import create_app
from slmflow.fleet.queues import JOBS_QUEUE
from slmflow.settings import load_settings

__all__ = ["worker"]

# Jobs wait on models and tools: threads, many per process, their I/O on one asyncio loop.
# Tools may be CPU-bound and are the ones to kill on a hard time limit: prefork.
_POOL = {True: ("threads", 256), False: ("prefork", 2)}


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues: slmflow.jobs, slmflow.tools, ...")] = JOBS_QUEUE,
    concurrency: Annotated[int | None, typer.Option(help="Slots (default: 256 for jobs, 2 for tools).")] = None,
    pool: Annotated[
        str | None, typer.Option(help="Celery pool (default: threads for jobs, prefork for tools).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    project: Annotated[Path | None, typer.Option(help="Project directory (default: cwd).")] = None,
) -> None:
    """Start a worker: `slmflow worker` runs jobs, `slmflow worker --queues slmflow.tools` runs tools."""
    settings = load_settings(**({"project": project} if project else {}))
    jobs = JOBS_QUEUE in queues.split(",")
    default_pool, default_concurrency = _POOL[jobs]
    app = create_app(settings)
    app.worker_main([
        "worker", "--queues", queues, "--pool", pool or default_pool,
        "--concurrency", str(concurrency or default_concurrency), "--loglevel", loglevel,
        "--without-gossip", "--without-mingle",
    ])  # fmt: skip
