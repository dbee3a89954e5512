"""`slmflow submit|status|result|events|cancel|list|review|approve`: jobs on a fleet, through the SDK
`Client`; `review` and `approve` also answer the CLI's own embedded jobs (kept in the cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from slmflow.answers import Tier
from slmflow.cli.output import console, err_console, exit_code, print_json, print_outcome, status_text
from slmflow.cli.run import run_embedded
from slmflow.client import Client, Job
from slmflow.embedded import read_input
from slmflow.errors import InvalidInput, JobAwaitingApproval, JobError, JobNotFound
from slmflow.events import Event
from slmflow.local_jobs import LocalJobs
from slmflow.outcomes import TERMINAL, JobRecord, JobStatus, approval_answer
from slmflow.settings import load_settings

__all__ = ["approve", "cancel", "events", "list_jobs", "result", "review", "status", "submit"]

JobId = Annotated[str, typer.Argument(help="Job id, as `slmflow submit` printed it.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")]
Timeout = Annotated[float | None, typer.Option(help="Give up waiting after this many seconds.")]

_CANCELLED = {
    "cancelled": "cancelled (it was still queued)",
    "cancelling": "cancelling (its worker stops it)",
    "finished": "already finished, nothing to cancel",
}


def submit(
    graph: Annotated[str, typer.Argument(help="Graph name, as a worker serves it.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSON file with the job's input.")],
    idempotency_key: Annotated[str | None, typer.Option(help="The same key again returns the first job.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end and print its record.")] = False,
    timeout: Timeout = None,
    json_output: JsonOutput = False,
) -> None:
    """Submit a job to the fleet; print its id (or, with --wait, its record)."""
    data = read_input(input)
    with Client() as client:
        job = client.submit(graph, data, idempotency_key=idempotency_key)
        if wait:
            _wait(job, timeout, json_output)
        elif json_output:
            print_json({"job_id": job.id, "status": job.status().value})
        else:
            print(job.id)


def status(job_id: JobId, json_output: JsonOutput = False) -> None:
    """Print where a job is: queued, running, succeeded, failed, needs_review or cancelled."""
    with Client() as client:
        state = client.get(job_id).status()
    if json_output:
        print_json({"job_id": job_id, "status": state.value})
    else:
        console.print(f"job {job_id}: {status_text(state)}")


def result(job_id: JobId, timeout: Timeout = None, json_output: JsonOutput = False) -> None:
    """Wait for a job to end and print its record (exit 1 unless it succeeded)."""
    with Client() as client:
        _wait(client.get(job_id), timeout, json_output)


def events(
    job_id: JobId,
    after: Annotated[str, typer.Option(help="Start after this event id (resume a stream).")] = "0",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line (JSON Lines).")] = False,
) -> None:
    """Print a job's events in order, one per line."""
    with Client() as client:
        for event in client.get(job_id).events(after, follow=follow):
            if json_output:
                print(json.dumps(event.model_dump(mode="json")), flush=True)
            else:
                console.print(_event_line(event), highlight=False, soft_wrap=True)


def cancel(job_id: JobId) -> None:
    """Cancel a job: at once if it is queued, by its worker if it is running."""
    with Client() as client:
        outcome = client.get(job_id).cancel()
    console.print(f"job {job_id}: {_CANCELLED.get(outcome, outcome)}")


def list_jobs(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    graph: Annotated[str | None, typer.Option(help="Only jobs of this graph.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
    json_output: JsonOutput = False,
) -> None:
    """List recent jobs, newest first."""
    with Client() as client:
        records = client.list(status, graph, limit)
    if json_output:
        print_json([record.model_dump(mode="json") for record in records])
        return
    table = Table(Column("job", no_wrap=True), "graph", Column("status", no_wrap=True), "created", "took", "calls")
    for record in records:
        created = f"{record.created_at:%m-%d %H:%M:%S}"
        counts = f"slm {record.usage.calls(Tier.SLM)}, llm {record.usage.calls(Tier.LLM)}"
        table.add_row(record.job_id, record.graph, status_text(record.status), created, _took(record), counts)
    console.print(table)


def review(
    job_id: JobId,
    answer: Annotated[Path, typer.Option("--answer", "-a", help="JSON file with the answer for the paused step.")],
    json_output: JsonOutput = False,
) -> None:
    """Answer the step a needs_review job waits on; the job resumes from there (an embedded job
    kept by `slmflow run` resumes here, in this process)."""
    value = _read_answer(answer)
    settings = load_settings()
    if LocalJobs.of(settings).get(job_id) is not None:
        run_embedded(settings, job_id, json_output, job_id=job_id, resume=value, waiting=JobStatus.NEEDS_REVIEW)
    with Client() as client:
        client.get(job_id).review(value)
    console.print(f"job {job_id}: answered, queued to resume")


def approve(
    job_id: JobId,
    edit: Annotated[
        Path | None,
        typer.Option("--edit", help='JSON file with the calls to run instead: [{"name": ..., "arguments": {...}}].'),
    ] = None,
    reject: Annotated[
        str | None, typer.Option("--reject", help="Reject the proposed calls; the step's model sees why.")
    ] = None,
    round: Annotated[
        int | None, typer.Option("--round", help="Decide only if this is still the proposal round you saw.")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Approve the tool calls an awaiting_approval job proposed (as they are, or --edit'ed), or
    --reject them; the job resumes and an approved call runs once. An embedded job resumes here
    (exit 0, 1 or 3 as `slmflow run`); a fleet's job is queued to resume (exit 0)."""
    calls = _read_answer(edit) if edit is not None else None
    answer = approval_answer(calls, reject, round=round)  # a bad decision is refused before anything is reached
    settings = load_settings()
    kept = LocalJobs.of(settings).get(job_id)
    if kept is not None:
        paused = kept.result.approval if kept.result is not None else None
        shown = paused.shown() if paused is not None else None
        answer = approval_answer(calls, reject, shown, round)
        run_embedded(settings, job_id, json_output, job_id=job_id, resume=answer, waiting=JobStatus.AWAITING_APPROVAL)
    with Client() as client:
        client.get(job_id).approve(edit=answer.get("edit"), reject=answer.get("reject"), round=round)
    console.print(f"job {job_id}: {'rejected' if 'reject' in answer else 'approved'}, queued to resume")


def _wait(job: Job, timeout: float | None, json_output: bool) -> None:
    """Wait on `job` with a spinner, print its record; a job that did not succeed re-raises its JobError."""
    try:
        with err_console.status(f"waiting for job {job.id}", spinner="dots"):
            record = job.result(timeout)
    except JobNotFound:
        raise
    except JobAwaitingApproval as exc:  # a pause with its own exit code, not a failure
        _print_record(job.get(), json_output)
        err_console.print(escape(str(exc)), soft_wrap=True)
        raise typer.Exit(exit_code(JobStatus.AWAITING_APPROVAL)) from None
    except JobError:
        _print_record(job.get(), json_output)  # the record explains the failure: print it, then exit 1
        raise
    except TimeoutError as exc:  # the SDK raises the builtin, not a SlmflowError: one line, no traceback
        err_console.print(f"[bold red]timeout:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    _print_record(record, json_output)


def _print_record(record: JobRecord, json_output: bool) -> None:
    if json_output:
        print_json(record.model_dump(mode="json"))
        return
    print_outcome(record)


def _took(record: JobRecord) -> str:
    if record.status not in TERMINAL or record.started_at is None or record.finished_at is None:
        return "-"
    return f"{(record.finished_at - record.started_at).total_seconds():.1f}s"


def _event_line(event: Event) -> str:
    """`id  time  kind  step  key=value ...` (scalar data only, each value cut short)."""
    data = event.data.model_dump(mode="json", exclude_none=True)
    shown = " ".join(f"{k}={_short(v)}" for k, v in data.items() if isinstance(v, str | int | float | bool))
    when = f"{event.at:%H:%M:%S.%f}"[:-3]
    return escape(f"{event.id}  {when}  {event.kind:<15} {event.step or '-':<20} {shown}".rstrip())


def _short(value: Any, width: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _read_answer(path: Path) -> Any:
    """A review answer: any JSON value in a file; unreadable or invalid files are `InvalidInput`."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read answer file {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"answer file {path} is not valid JSON: {exc}") from None
