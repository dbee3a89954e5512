"""`slmflow run GRAPH --input FILE [--job-id ID] [--json]`: one job, in this process, kept by its id."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from slmflow.cli.output import err_console, exit_code, print_json, print_outcome, render_event
from slmflow.embedded import load_graph, read_input, run_local
from slmflow.errors import InvalidInput
from slmflow.events import Event
from slmflow.jobs import NO_RESUME
from slmflow.outcomes import JobStatus
from slmflow.settings import Settings, load_settings
from slmflow.telemetry import setup_metrics, setup_tracing

__all__ = ["run", "run_embedded"]


def run(
    graph: Annotated[str, typer.Argument(help="Graph name, as the project file declares it.")],
    input: Annotated[Path | None, typer.Option("--input", "-i", help="JSON file with the job's input.")] = None,
    job_id: Annotated[
        str | None,
        typer.Option(
            "--job-id", help="Resume this kept job (interrupted, or show a paused one), or start it under this id."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
    project: Annotated[Path | None, typer.Option(help="Project directory (default: cwd).")] = None,
) -> None:
    """Run one job in-process (starts the local model server when SLMFLOW_SLM_BASE_URL is unset).

    The job is kept in the cache directory under its id: `--job-id ID` resumes it after the process
    was interrupted, and `slmflow review` / `slmflow approve` answer it when it pauses. Exit codes:
    0 succeeded, 1 failed or needs_review, 2 a user error, 3 awaiting_approval.
    """
    settings = load_settings(**({"project": project} if project else {}))
    load_graph(graph, settings)  # an unknown graph is reported before a bad input file
    if input is None and job_id is None:
        raise InvalidInput("give the job's input: --input FILE (or --job-id ID to resume a kept job)")
    data = read_input(input) if input is not None else None
    run_embedded(settings, graph, json_output, graph=graph, data=data, job_id=job_id)


def run_embedded(settings: Settings, label: str, json_output: bool, *, resume: Any = NO_RESUME,
                 waiting: JobStatus | None = None, **job: Any) -> None:  # fmt: skip
    """Run (or resume) a kept embedded job with progress on stderr, print its outcome, exit with its code."""
    setup_tracing("slmflow", capture=settings.capture_content)
    setup_metrics("slmflow")
    with err_console.status(f"running {label}", spinner="dots") as status:

        def show(event: Event) -> None:
            line = render_event(event)
            if line:
                err_console.print(line, highlight=False)
            if event.kind == "step_started":
                status.update(f"{label}: {event.step}")

        def progress(message: str) -> None:
            status.update(message)
            err_console.print(f"[dim]{message}[/]", highlight=False)

        result = asyncio.run(run_local(settings, resume=resume, waiting=waiting, emit=show, progress=progress, **job))
    if json_output:
        print_json(result.model_dump(mode="json"))
    else:
        print_outcome(result)
    raise typer.Exit(exit_code(result.status))
