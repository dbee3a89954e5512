"""Consoles and rendering shared by the commands: progress on stderr, results on stdout."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from slmflow.answers import Tier
from slmflow.cli.consoles import console, err_console
from slmflow.events import Event, StepFinished
from slmflow.outcomes import AskedReview, JobResult, JobStatus, OutcomeUnknownReview, Review
from slmflow.results import Escalation

__all__ = [
    "EXIT_CODES", "STATUS_COLOURS", "console", "err_console", "exit_code", "print_json", "print_outcome",
    "render_event", "status_text",
]  # fmt: skip


def print_json(data: Any) -> None:
    """Exactly one JSON object on stdout, nothing else."""
    print(json.dumps(data, default=str))


def render_event(event: Event) -> str | None:
    """One progress line for an event, or None for events not worth a line."""
    data = event.data
    if isinstance(data, StepFinished):
        if data.status == "ok" and data.approval:
            return f"[green]✓[/] {event.step} [dim]({data.approval}: its call(s) ran)[/]"
        if data.status == "ok":
            shown = f" confidence {data.confidence:.2f}" if data.confidence is not None else ""
            return f"[green]✓[/] {event.step} [dim]({data.tier}, {data.attempts} call(s){shown})[/]"
        if data.status == "proposed":
            return f"[cyan]⏸[/] {event.step} [dim]proposes its tool call(s): they wait for approval[/]"
        if data.status == "routed":
            return f"[yellow]↪[/] {event.step} [dim]failed: the job goes on at {data.to}[/]"
        if data.status == "failed":
            return f"[red]✗[/] {event.step} [dim]failed: the job fails[/]"
        return f"[yellow]✗[/] {event.step} [dim]no tier could answer after {data.attempts} call(s)[/]"
    if isinstance(data, Escalation):
        detail = escape(data.detail[:160])
        return f"  [yellow]↑[/] {event.step}: {data.reason} → {data.to}: [dim]{detail}[/]"
    return None


STATUS_COLOURS = {"succeeded": "green", "queued": "cyan", "running": "cyan", "needs_review": "yellow",
                  "awaiting_approval": "yellow"}  # fmt: skip
"""How a status is coloured (anything else, failed or cancelled, is red)."""


def status_text(status: JobStatus) -> str:
    """A status in its colour, for rich."""
    return f"[bold {STATUS_COLOURS.get(status.value, 'red')}]{status.value}[/]"


EXIT_CODES = {JobStatus.SUCCEEDED: 0, JobStatus.AWAITING_APPROVAL: 3}
"""Exit codes of a job's outcome: 0 succeeded, 3 awaiting_approval, 1 anything else (2 is a user error)."""


def exit_code(status: JobStatus) -> int:
    """The CLI's exit code for a job that ended (or paused) with `status`."""
    return EXIT_CODES.get(status, 1)


def print_outcome(result: JobResult) -> None:
    """A job's outcome for people: status, output, why it waits or failed, calls and cost."""
    job_id, status = result.job_id, result.status
    console.print(f"job {job_id} ({result.graph}): {status_text(status)}")
    if result.output:
        console.print_json(data=result.output)
    if result.review is not None:
        _print_review(job_id, result.review)
    if (approval := result.approval) is not None:
        console.print(f"waiting for approval at step {approval.step}, round {approval.round} "
                      f"(proposed by {approval.tier}):")  # fmt: skip
        for call in approval.calls:
            console.print(f"  {escape(call.name)}({escape(json.dumps(call.arguments))})")
        for problem in approval.review_errors:
            console.print(f"  last decision refused: {escape(problem)}")
        console.print(f"  decide: slmflow approve {job_id} --round {approval.round} [--edit FILE | --reject WHY]")
    if result.error is not None:
        console.print(f"[red]{escape(result.error.type)}: {escape(result.error.message)}[/]")
    usage = result.usage
    console.print(
        f"calls slm={usage.calls(Tier.SLM)} llm={usage.calls(Tier.LLM)}  "
        f"cost {usage.cost:.6f} (all-LLM {usage.all_llm_cost:.6f})  {usage.latency_s:.1f}s"
    )


def _print_review(job_id: str, review: Review) -> None:
    if isinstance(review, AskedReview):  # a code node's question (ask_human)
        console.print(f"waiting for an answer at step {review.step}: {escape(review.question)}")
        if review.details:
            console.print(f"  {escape(json.dumps(review.details)[:300])}")
    elif isinstance(review, OutcomeUnknownReview):
        console.print(f"waiting for a person to settle a tool call at step {review.step}: {escape(review.message)}")
        console.print(f"  {escape(str(review.tool))}({escape(json.dumps(review.arguments))}) key {review.key}; "
                      'answer {"result": ...} if it ran, {"retry": true} if it did not')  # fmt: skip
    else:
        console.print(f"waiting for review at step {review.step}: {escape(', '.join(review.reasons))}")
        if review.last_output is not None:
            said = review.last_output if isinstance(review.last_output, str) else json.dumps(review.last_output)
            console.print(f"  the model last answered: {escape(said[:300])}")
    for problem in review.review_errors:
        console.print(f"  last review answer refused: {escape(problem)}")
    console.print(f"  answer it: slmflow review {job_id} --answer FILE")
