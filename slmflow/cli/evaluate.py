"""`slmflow eval SKILL|GRAPH --data FILE`: accuracy, escalations, calls, latency and cost per model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from slmflow.answers import input_hash
from slmflow.cli.output import console, err_console, print_json
from slmflow.connect import open_endpoints
from slmflow.errors import InvalidInput, UnknownGraph, UnknownSkill
from slmflow.graphs import GraphSpec
from slmflow.learning.evaluate import TARGETS, Case, ModelReport, evaluate, plot_reports, read_cases
from slmflow.learning.hooks import Learning, project_floors_file
from slmflow.learning.store import DatasetStore
from slmflow.project import find_project
from slmflow.settings import Settings, load_settings
from slmflow.skills import Skill

__all__ = ["evaluate_command"]


def _target(settings: Settings, name: str) -> tuple[Skill | GraphSpec, GraphSpec]:
    project = find_project(settings.project)
    if name in project.graphs:
        spec = project.load_graph(name)
        return spec, spec
    try:
        return project.find_skill(name)
    except UnknownSkill as exc:
        raise UnknownGraph(f"{exc}; graphs: {', '.join(sorted(project.graphs))}", graph=name) from None


def evaluate_command(
    target: Annotated[str, typer.Argument(help="A skill or a graph of the project.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSONL of {'input': ..., 'expected': ...}.")],
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="SLM model or adapter; repeat to compare.")
    ] = None,
    slice_field: Annotated[
        str | None, typer.Option("--slice", help="Field of the data to break figures down by.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG chart here.")] = None,
    precision: Annotated[
        float | None,
        typer.Option(
            "--target",
            min=0.5,
            max=0.999,
            help="Evaluate a skill at this precision target (the floors calibrated for it) instead of its own.",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Cases in flight at once.")] = 4,
    record: Annotated[
        bool, typer.Option("--record", help="Keep the runs in the dataset store (training data), LLM answers too.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> None:
    """Evaluate a skill or graph against expected answers, side by side for several models."""
    settings = load_settings()
    subject, spec = _target(settings, target)
    if precision is not None:
        if not isinstance(subject, Skill):
            raise InvalidInput(f"--target applies to a skill; {target} is a graph: evaluate its skills one by one")
        subject = subject.at_target(precision)
    cases = read_cases(data, slice_field)
    if isinstance(subject, Skill):
        _warn_overlap(settings, subject, cases)
    models: list[str | None] = list(model) if model else [None]
    reports = asyncio.run(_run(settings, subject, spec, cases, models, slice_field, concurrency, record))
    if plot:
        plot_reports(reports, plot, slice_field)
    if json_output:
        print_json({"target": target, "data": str(data), "reports": [r.model_dump() for r in reports],
                    "plot": str(plot) if plot else None})  # fmt: skip
        return
    _table(reports, slice_field)
    if plot:
        console.print(f"plot: {plot}")


async def _run(
    settings: Settings, subject: Skill | GraphSpec, spec: GraphSpec, cases: list[Case], models: list[str | None],
    slice_field: str | None, concurrency: int, record: bool,
) -> list[ModelReport]:  # fmt: skip
    reports = []
    hooks = Learning(DatasetStore(settings.dataset_store_url), record=record, rationale=settings.record_rationale,
                     follow_routes=False, floors_file=project_floors_file(settings))  # fmt: skip
    recorder = hooks if record else None
    async with open_endpoints(settings, models=[m for m in models if m],
                              progress=lambda m: err_console.print(f"[dim]{m}[/]")) as endpoints:  # fmt: skip
        default = endpoints.slm.endpoint.default_model
        for model in models:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=err_console, transient=True) as bar:
                task = bar.add_task(f"{subject.name} on {model or default}", total=len(cases))

                def advance(done: int, bar: Progress = bar, task: TaskID = task) -> None:
                    bar.update(task, completed=done)

                reports.append(await evaluate(
                    subject, spec, cases, endpoints, model=model, slice_field=slice_field, concurrency=concurrency,
                    progress=advance, record=recorder, hooks=hooks,
                ))  # fmt: skip
    return reports


def _table(reports: list[ModelReport], slice_field: str | None) -> None:
    table = Table(f"{reports[0].target} ({reports[0].cases} cases)", *(r.model for r in reports))
    rows: list[tuple[str, Callable[[ModelReport], str]]] = [
        ("accuracy", lambda r: f"{r.accuracy:.1%}"),
        ("SLM alone right", lambda r: f"{r.slm_accuracy:.1%}"),
        ("kept SLM answers right (precision)", lambda r: "-" if r.precision is None else f"{r.precision:.1%}"),
        ("SLM answers kept (coverage)", lambda r: f"{r.coverage:.1%}"),
        ("kept SLM answers wrong", lambda r: str(r.accepted_wrong)),
        (
            "coverage at precision 80/90/95%",
            lambda r: (
                " / ".join("-" if (c := r.coverage_at.get(str(t))) is None else f"{c:.0%}" for t in TARGETS)
                if r.curve
                else "-"
            ),
        ),
        ("escalation rate", lambda r: f"{r.escalation_rate:.1%}"),
        ("escalation reasons", lambda r: ", ".join(f"{k} {v}" for k, v in r.reasons.items()) or "-"),
        ("calls", lambda r: ", ".join(f"{t} {u.calls}" for t, u in sorted(r.usage.tiers.items()))),
        (
            "tokens",
            lambda r: ", ".join(
                f"{t} {u.input_tokens} in, {u.output_tokens} out" for t, u in sorted(r.usage.tiers.items())
            ),
        ),
        ("latency p50 / p95", lambda r: f"{r.latency_p50_s:.2f}s / {r.latency_p95_s:.2f}s"),
        ("cost per 100", lambda r: f"{r.cost_per_100:.4f}"),
        ("all-LLM cost per 100", lambda r: f"{r.all_llm_cost_per_100:.4f}"),
    ]
    for label, render in rows:
        table.add_row(label, *(render(r) for r in reports))
    if slice_field:
        values = sorted({v for r in reports for v in r.slices.get(slice_field, {})})
        for value in values:
            cells = []
            for r in reports:
                s = r.slices[slice_field].get(value)
                cells.append(f"{s.accuracy:.1%} right, {s.escalation_rate:.1%} escalated ({s.cases})" if s else "-")
            table.add_row(f"{slice_field}={value}", *cells)
    console.print(table)


def _warn_overlap(settings: Settings, skill: Skill, cases: list[Case]) -> None:
    """Say so when these cases calibrated the skill's floor: its precision here is optimistic."""
    store = DatasetStore(settings.dataset_store_url)
    if not store.exists():
        return
    mine = {input_hash(c.input) for c in cases}
    for record in store.floors(skill.name)[:5]:
        overlap = len(mine & set(record.input_hashes))
        if overlap:
            err_console.print(f"[yellow]warning:[/] {overlap} of these {len(cases)} cases calibrated the floor of "
                              f"{skill.name} on {record.model} (calibration {record.id}): precision measured on "
                              "them is optimistic; evaluate on held-out data")  # fmt: skip
            return
