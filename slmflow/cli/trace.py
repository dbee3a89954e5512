"""`slmflow trace JOB_ID`: a job's step tree from its events, and the link to its trace."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from slmflow.cli.output import console, print_json
from slmflow.client import Client
from slmflow.events import summarize_steps
from slmflow.settings import load_settings

__all__ = ["trace"]


def trace(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job's steps (timing, tier, calls, tokens, escalations, tools) and its trace link."""
    settings = load_settings()
    with Client(settings) as client:
        job = client.get(job_id)
        record = job.get()
        steps = summarize_steps(list(job.events(follow=False)))
    url = settings.trace_url.format(trace_id=record.trace_id) if settings.trace_url and record.trace_id else None
    if json_output:
        summary = {"job_id": record.job_id, "graph": record.graph, "status": record.status.value}
        print_json({**summary, "trace_id": record.trace_id, "trace_url": url, "steps": [s.model_dump() for s in steps]})
        return
    tree = Tree(f"job {record.job_id} ({record.graph}) [bold]{record.status.value}[/]  trace {record.trace_id or '-'}")
    for step in steps:
        timing = f"{step.seconds:.2f}s" if step.seconds is not None else "…"
        confidence = f" conf {step.confidence:.2f}" if step.confidence is not None else ""
        node = tree.add(
            f"{step.step} [dim]{step.status} · {step.tier or '-'} · {step.calls} call(s) · {timing} · "
            f"tokens {step.input_tokens}/{step.output_tokens}{confidence}[/]"
        )
        for escalation in step.escalations:
            node.add(f"[yellow]↑ {escape(escalation[:200])}[/]")
        for tool in step.tools:
            node.add(f"tool {escape(tool)}")
    console.print(tree)
    if url:
        console.print(f"trace: {url}")
