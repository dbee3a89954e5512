"""Consoles and rendering shared by the commands: progress on stderr, results on stdout."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from slmflow.events import Event
from slmflow.jobs import JobStatus, JobUsage

__all__ = ["EXIT_CODES", "console", "err_console", "exit_code", "print_json", "print_outcome", "render_event"]

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Exactly one JSON object on stdout, nothing else."""
    print(json.dumps(data, default=str))


def render_event(event: Event) -> str | None:
    """One progress line for an event, or None for events not worth a line."""
    data = event.data
    if event.kind == "step_finished":
        status = data.get("status")
        if status == "ok" and data.get("approval"):
            return f"[green]✓[/] {event.step} [dim]({data['approval']}: its call(s) ran)[/]"
        if status == "ok":
            conf = data.get("confidence")
            shown = f" confidence {conf:.2f}" if conf is not None else ""
            return f"[green]✓[/] {event.step} [dim]({data.get('tier')}, {data.get('attempts')} call(s){shown})[/]"
        if status == "proposed":
            return f"[cyan]⏸[/] {event.step} [dim]proposes its tool call(s): they wait for approval[/]"
        if status == "routed":
            return f"[yellow]↪[/] {event.step} [dim]failed: the job goes on at {data.get('to')}[/]"
        if status == "failed":
            return f"[red]✗[/] {event.step} [dim]failed: the job fails[/]"
        return f"[yellow]✗[/] {event.step} [dim]no tier could answer after {data.get('attempts')} call(s)[/]"
    if event.kind == "skill_escalated":
        detail = escape(str(data.get("detail", ""))[:160])
        return f"  [yellow]↑[/] {event.step}: {data.get('reason')} → {data.get('to')}: [dim]{detail}[/]"
    return None


EXIT_CODES = {JobStatus.SUCCEEDED: 0, JobStatus.AWAITING_APPROVAL: 3}
"""Exit codes of a job's outcome: 0 succeeded, 3 awaiting_approval, 1 anything else (2 is a user error)."""


def exit_code(status: JobStatus) -> int:
    """The CLI's exit code for a job that ended (or paused) with `status`."""
    return EXIT_CODES.get(status, 1)


def print_outcome(
    job_id: str,
    graph: str,
    status: JobStatus,
    output: dict[str, Any] | None,
    review: dict[str, Any] | None,
    error: dict[str, Any] | None,
    usage: JobUsage,
    approval: dict[str, Any] | None = None,
) -> None:
    """A job's outcome for people: status, output, why it waits or failed, calls and cost."""
    colour = {"succeeded": "green", "needs_review": "yellow", "awaiting_approval": "yellow", "running": "cyan",
              "queued": "cyan"}.get(status, "red")  # fmt: skip
    console.print(f"job {job_id} ({graph}): [bold {colour}]{status.value}[/]")
    if output:
        console.print_json(data=output)
    if review and review.get("reason") == "asked":  # a code node's question (ask_human)
        console.print(f"waiting for an answer at step {review.get('step')}: {escape(str(review.get('question')))}")
        if review.get("details"):
            console.print(f"  {escape(json.dumps(review['details'])[:300])}")
        console.print(f"  answer it: slmflow review {job_id} --answer FILE")
    elif review:
        reasons = ", ".join(map(str, review.get("reasons", [])))
        console.print(f"waiting for review at step {review.get('step')}: {escape(reasons)}")
        if review.get("last_output") is not None:
            console.print(f"  the model last answered: {escape(json.dumps(review['last_output'])[:300])}")
        for problem in review.get("review_errors", []):
            console.print(f"  last review answer refused: {escape(str(problem))}")
        console.print(f"  answer it: slmflow review {job_id} --answer FILE")
    if approval:
        console.print(f"waiting for approval at step {approval.get('step')}, round {approval.get('round')} "
                      f"(proposed by {approval.get('tier')}):")  # fmt: skip
        for call in approval.get("calls", []):
            console.print(f"  {escape(str(call.get('name')))}({escape(json.dumps(call.get('arguments')))})")
        for problem in approval.get("review_errors", []):
            console.print(f"  last decision refused: {escape(str(problem))}")
        console.print(
            f"  decide: slmflow approve {job_id} --round {approval.get('round')} [--edit FILE | --reject WHY]"
        )
    if error:
        console.print(f"[red]{escape(str(error.get('type')))}: {escape(str(error.get('message')))}[/]")
    console.print(
        f"calls slm={usage.calls.get('slm', 0)} llm={usage.calls.get('llm', 0)}  "
        f"cost {usage.cost.get('actual', 0.0):.6f} (all-LLM {usage.cost.get('all_llm', 0.0):.6f})  "
        f"{usage.latency_s:.1f}s"
    )
