"""`slmflow worker`: start a worker of the fleet (a thin wrapper over the Celery app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from slmflow.fleet.app import create_app
from slmflow.fleet.processes import process_count, run_processes
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
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes on this host, each a node with its own slots and event loop "
            "(0: one per core). A jobs process uses one core at most.",
        ),
    ] = 1,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default: Celery's, celery@host).")] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve /livez, /readyz, /metrics here (default: SLMFLOW_HEALTH_PORT, "
            "8081; 0: none). With --processes N, process i uses this port plus i.",
        ),
    ] = None,
) -> None:
    """Start a worker: `slmflow worker` runs jobs, `slmflow worker --queues slmflow.tools` runs tools."""
    count = process_count(processes)
    if count > 1:  # this process only supervises; each child is a worker of one process
        base = [sys.executable, "-m", "slmflow", "worker", "--queues", queues, "--loglevel", loglevel,
                *(["--concurrency", str(concurrency)] if concurrency else []), *(["--pool", pool] if pool else []),
                *(["--project", str(project)] if project else [])]  # fmt: skip
        node, _, host = (hostname or "celery@%h").partition("@")
        port = load_settings().health_port if health_port is None else health_port
        commands = [[*base, "--hostname", f"{node}{i}@{host or '%h'}", "--health-port", str(port + i if port else 0)]
                    for i in range(count)]  # fmt: skip
        raise typer.Exit(run_processes(commands))
    overrides = {"project": project} if project else {}
    settings = load_settings(**overrides, **({"health_port": health_port} if health_port is not None else {}))
    jobs = JOBS_QUEUE in queues.split(",")
    default_pool, default_concurrency = _POOL[jobs]
    app = create_app(settings)
    app.worker_main([
        "worker", "--queues", queues, "--pool", pool or default_pool,
        "--concurrency", str(concurrency or default_concurrency), "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", *(["--hostname", hostname] if hostname else []),
    ])  # fmt: skip
