"""`slmflow calibrate SKILL --data FILE`: the floor that meets a precision target, and its table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slmflow.calibration import Calibration, Outcome, RiskRow, choose_floor, min_kept
from slmflow.cli.output import console, err_console, print_json
from slmflow.connect import open_endpoints
from slmflow.errors import UsageError
from slmflow.hooks import serving_model
from slmflow.learning.calibrate import collect_outcomes, floor_record, from_file, recorded_outcomes
from slmflow.learning.evaluate import read_cases
from slmflow.learning.floors import FLOORS_FILE, write_floor
from slmflow.learning.store import DatasetStore
from slmflow.project import find_project
from slmflow.redaction import mask_url
from slmflow.settings import load_settings

__all__ = ["calibrate_command"]


def calibrate_command(
    skill_name: Annotated[str, typer.Argument(metavar="SKILL", help="A skill of the project.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="JSONL of {'input': ..., 'expected': ...}; default: recorded runs and audits."
        ),
    ] = None,
    target: Annotated[
        float | None, typer.Option(min=0.5, max=0.999, help="Precision of kept answers (default: the skill's).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="SLM model or adapter (default: the skill's).")
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help=f"Also commit the floor to the project's {FLOORS_FILE}.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Inputs in flight at once.")] = 4,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
) -> None:
    """Calibrate a skill's confidence floor so that kept SLM answers meet a precision target."""
    settings = load_settings()
    project = find_project(settings.project)
    skill, spec = project.find_skill(skill_name)
    goal = target if target is not None else skill.target_precision
    if goal is None:
        raise UsageError(f"skill {skill.name!r} has no target_precision: pass --target (e.g. --target 0.9) "
                         "or set Skill(target_precision=...)")  # fmt: skip
    store = DatasetStore(settings.dataset_store_url)
    if data is not None:
        cases = read_cases(data)
        outcomes, served = asyncio.run(_collect(settings, skill, spec, cases, model, concurrency))
        labelled = from_file(data, cases, outcomes)
    else:
        served = model or serving_model(skill, None, settings.slm_model or settings.local_model)
        if not store.exists():
            raise UsageError(f"nothing recorded in {mask_url(store.url)}: pass --data FILE, or record runs "
                             "(SLMFLOW_RECORD=true) and audits (an LLM configured) first")  # fmt: skip
        labelled = recorded_outcomes(store, skill, served)
        if not labelled.outcomes:
            raise UsageError(f"no labelled runs of {skill.name} on {served} in {mask_url(store.url)} (escalated "
                             "runs and audits are the labels): pass --data FILE, or --model the model they ran "
                             "on")  # fmt: skip
    outcomes = labelled.outcomes
    calibration = choose_floor(outcomes, goal)
    record = floor_record(skill, served, labelled, calibration)
    store.add_floor(record)
    floors_file = project.root / FLOORS_FILE
    if write:
        write_floor(floors_file, record)
    if json_output:
        print_json({"skill": skill.name, "model": served, "signal": skill.signal, "target": goal,
                    "floor": calibration.floor, "reason": calibration.reason, "version": record.id,
                    "figures": record.figures, "rows": [_row(r) for r in calibration.rows],
                    "written": str(floors_file) if write else None})  # fmt: skip
        return
    _show(skill.name, served, skill.signal, calibration, outcomes)
    console.print(f"stored as calibration {record.id} in the dataset store" + (f"; written to {floors_file}"
                                                                                if write else ""))  # fmt: skip


async def _collect(settings: Any, skill: Any, spec: Any, cases: Any, model: str | None,
                   concurrency: int) -> tuple[list[Outcome], str]:  # fmt: skip
    async with open_endpoints(settings, models=[model] if model else [],
                              progress=lambda m: err_console.print(f"[dim]{m}[/]")) as endpoints:  # fmt: skip
        served = model or serving_model(skill, None, endpoints.slm.endpoint.default_model)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task(f"{skill.name} on {served}", total=len(cases))
            outcomes = await collect_outcomes(skill, spec, cases, endpoints, model=model, concurrency=concurrency,
                                              progress=lambda done: bar.update(task, completed=done))  # fmt: skip
    return outcomes, served


def _row(row: RiskRow) -> dict[str, Any]:
    return {"floor": row.floor, "kept": row.kept, "right": row.right, "coverage": row.coverage,
            "precision": row.precision, "precision_lower": row.lower}  # fmt: skip


def _show(skill: str, model: str, signal: str, calibration: Calibration, outcomes: list[Outcome]) -> None:
    passed = sum(o.passed for o in outcomes)
    table = Table("floor", "kept", "coverage", "precision", "95% lower bound",
                  title=f"{skill} on {model}: risk and coverage ({signal} confidence, {len(outcomes)} inputs, "
                        f"{passed} passed their checks)")  # fmt: skip
    rows = calibration.rows
    step = max(1, len(rows) // 15)
    shown = {id(r) for r in rows[::step]} | ({id(calibration.chosen)} if calibration.chosen else set())
    for row in rows:
        if id(row) not in shown:
            continue
        style = "bold green" if row is calibration.chosen else None
        table.add_row(f"{row.floor:.4f}", str(row.kept), f"{row.coverage:.1%}", f"{row.precision:.1%}",
                      f"{row.lower:.1%}", style=style)  # fmt: skip
    console.print(table)
    if calibration.floor is not None and calibration.chosen is not None:
        chosen = calibration.chosen
        console.print(f"[bold green]floor {calibration.floor:.4f}[/] keeps {chosen.coverage:.1%} of the inputs at "
                      f"{chosen.precision:.1%} precision (at least {chosen.lower:.1%} with 95% confidence; target "
                      f"{calibration.target:.0%})")  # fmt: skip
    else:
        console.print(f"[bold yellow]{calibration.reason}[/] (a {calibration.target:.0%} target needs at least "
                      f"{min_kept(calibration.target)} kept answers, all right)")  # fmt: skip
