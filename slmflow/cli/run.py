"""`slmflow run GRAPH --input FILE [--json]`: one job, in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from slmflow.cli.output import err_console, print_json, print_outcome, render_event
from slmflow.embedded import load_graph, read_input, run_graph
from slmflow.events import Event
from slmflow.jobs import JobResult, JobStatus
from slmflow.settings import load_settings
from slmflow.telemetry import setup_metrics, setup_tracing

__all__ = ["run"]


def run(
    graph: Annotated[str, typer.Argument(help="Graph name, as the project file declares it.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSON file with the job's input.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
    project: Annotated[Path | None, typer.Option(help="Project directory (default: cwd).")] = None,
) -> None:
    """Run one job in-process (starts the local model server when SLMFLOW_SLM_BASE_URL is unset)."""
    settings = load_settings(**({"project": project} if project else {}))
    setup_tracing("slmflow")
    setup_metrics("slmflow")
    load_graph(graph, settings)  # an unknown graph is reported before a bad input file
    data = read_input(input)
    with err_console.status(f"running {graph}", spinner="dots") as status:

        def show(event: Event) -> None:
            line = render_event(event)
            if line:
                err_console.print(line, highlight=False)
            if event.kind == "step_started":
                status.update(f"{graph}: {event.step}")

        def progress(message: str) -> None:
            status.update(message)
            err_console.print(f"[dim]{message}[/]", highlight=False)

        result = asyncio.run(run_graph(graph, data, settings, emit=show, progress=progress))
    if json_output:
        print_json(_json(result))
    else:
        _print(result)
    raise typer.Exit(0 if result.status == JobStatus.SUCCEEDED else 1)


def _json(result: JobResult) -> dict[str, object]:
    usage = result.usage
    return {
        "job_id": result.job_id,
        "graph": result.graph,
        "status": result.status.value,
        "output": result.output,
        "review": result.review,
        "error": result.error,
        "usage": {
            "calls": usage.calls,
            "tokens": usage.tokens,
            "escalations": [{k: e[k] for k in ("step", "skill", "reason", "detail")} for e in usage.escalations],
            "cost": usage.cost,
            "latency_s": usage.latency_s,
        },
        "trace_id": result.trace_id,
    }


def _print(result: JobResult) -> None:
    print_outcome(result.job_id, result.graph, result.status, result.output, result.review, result.error, result.usage)
