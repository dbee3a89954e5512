"""`slmflow distill ...`: escalations become training data, then an adapter, served and promoted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from slmflow.calibration import precision_lower_bound, precision_upper_bound
from slmflow.cli.output import console, err_console, print_json
from slmflow.errors import InvalidInput
from slmflow.hooks import serving_floor, serving_model
from slmflow.learning import adapters as adapter_ops
from slmflow.learning.export import export_records
from slmflow.learning.hooks import AUDIT_WINDOW, Learning, audit_alarm, project_floors_file
from slmflow.learning.store import DatasetStore
from slmflow.learning.train import TrainConfig, read_dataset, train_adapter
from slmflow.local_server import model_dir, prepare
from slmflow.project import find_project
from slmflow.redaction import mask_url
from slmflow.settings import Settings, load_settings
from slmflow.skills import Skill

__all__ = ["app"]

app = typer.Typer(
    help="The learning loop: export escalations, train a LoRA adapter, load, shadow, promote, roll back.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")]


def _store(settings: Settings, *, recorded: bool = False) -> DatasetStore:
    """The dataset store; with `recorded`, one that has something in it or a `UsageError` saying so."""
    store = DatasetStore(settings.dataset_store_url)
    if recorded and not store.exists():
        raise InvalidInput(f"nothing recorded yet in {mask_url(store.url)}: run jobs with SLMFLOW_RECORD=true first")
    return store


def _base_model(settings: Settings, skill: Skill | None = None) -> str:
    """What serves a skill with no route: its own `model`, or the endpoint's default."""
    default = settings.slm_model or settings.local_model
    return serving_model(skill, None, default) if skill else default


@app.command()
def export(
    skill: Annotated[str, typer.Argument(help="The skill whose recorded runs to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    include_slm: Annotated[bool, typer.Option(help="Also keep confident SLM answers that passed.")] = False,
    min_confidence: Annotated[float, typer.Option(help="Confidence floor of kept SLM answers.")] = 0.9,
    validation: Annotated[float, typer.Option(help="Share of inputs held out for validation.")] = 0.1,
    rationales: Annotated[bool, typer.Option(help="Add the LLM's rationales as a second task.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write chat-format SFT records from LLM and reviewer answers (de-duplicated, split)."""
    settings = load_settings()
    spec_skill, _ = find_project(settings.project).find_skill(skill)
    store = _store(settings, recorded=True)
    report = export_records(
        spec_skill, store.runs(skill), out, include_slm=include_slm, min_confidence=min_confidence,
        validation_fraction=validation, rationales=rationales,
    )  # fmt: skip
    if json_output:
        print_json(report.model_dump())
        return
    sources = ", ".join(f"{k} {v}" for k, v in sorted(report.by_source.items())) or "none"
    console.print(
        f"{report.kept} examples from {report.runs} runs of {skill} ({sources}): "
        f"{report.train} train, {report.validation} validation → {out}"
    )
    if not report.kept:
        err_console.print("no runs had an LLM or reviewer answer yet: nothing to train on")


@app.command()
def train(
    skill: Annotated[str, typer.Argument(help="The skill the adapter is for.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset written by `distill export`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write (e.g. adapters/NAME).")],
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    learning_rate: Annotated[float, typer.Option("--lr", min=1e-7, max=1.0)] = 1e-3,
    rank: Annotated[int, typer.Option(min=1, max=16, help="LoRA rank (the local server allows up to 16).")] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the example order and the adapter's initial weights.")] = 0,
    json_output: JsonOption = False,
) -> None:
    """LoRA fine-tune the base model on a dataset, on the CPU; writes an adapter vLLM can serve."""
    settings = load_settings()
    find_project(settings.project).find_skill(skill)
    read_dataset(data)  # a missing or broken dataset is reported before anything loads
    base = prepare(settings, progress=lambda m: err_console.print(f"[dim]{m}[/]"))
    config = TrainConfig(epochs=epochs, learning_rate=learning_rate, rank=rank, batch_size=batch_size, seed=seed)
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=err_console, transient=json_output) as bar:
        task = bar.add_task(f"training {out.name}", total=None, loss="-")

        def advance(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        report = train_adapter(data, out, base or model_dir(settings), config=config, progress=advance, skill=skill)
    if json_output:
        print_json(report.model_dump())
        return
    validation = f", validation loss {report.validation_loss:.3f}" if report.validation_loss is not None else ""
    console.print(
        f"adapter for {skill} in {out}: {report.train_examples} examples × {config.epochs} epochs, "
        f"train loss {report.train_loss:.3f}{validation}, {report.seconds:.0f}s"
    )
    console.print(f"serve it: slmflow distill load {out}   then: slmflow distill shadow {skill} {out.name}")


@app.command()
def load(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder (written by `distill train`).")],
    name: Annotated[str | None, typer.Option(help="Model name to serve it as (default: the folder's name).")] = None,
) -> None:
    """Load an adapter into the running SLM server (vLLM `/v1/load_lora_adapter`)."""
    settings = load_settings()
    base_url = settings.slm_base_url or settings.local_base_url
    adapter_ops.load_adapter(base_url, name or adapter.name, adapter)
    console.print(f"{mask_url(base_url)} serves {name or adapter.name}")


@app.command()
def shadow(
    skill: Annotated[str, typer.Argument(help="The skill.")],
    adapter: Annotated[str, typer.Argument(help="Served model name of the candidate adapter.")],
    rate: Annotated[float, typer.Option(help="Share of live calls the candidate also answers.")] = 0.2,
) -> None:
    """Run a candidate adapter beside the skill's current model on a sample of live calls."""
    settings = load_settings()
    spec_skill, _ = find_project(settings.project).find_skill(skill)
    adapter_ops.validate_rate(rate)
    adapter_ops.require_served(settings.slm_base_url or settings.local_base_url, adapter)
    route = adapter_ops.start_shadow(_store(settings), skill, adapter, rate)
    current = route.current or _base_model(settings, spec_skill)
    console.print(
        f"{adapter} shadows {current} on {rate:.0%} of {skill} calls; `slmflow distill promote {skill}` when ready"
    )


@app.command()
def promote(
    skill: Annotated[str, typer.Argument(help="The skill.")],
    target: Annotated[
        float | None,
        typer.Option(
            help="Precision the candidate must be vouched for at; default: the skill's target_precision, else 0.9.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Switch the skill to its candidate, only if it is right often enough (by the calibration's bound,
    against the LLM's and reviewers' answers) and keeps more calls than the current model."""
    settings = load_settings()
    spec_skill, _ = find_project(settings.project).find_skill(skill)
    promoted, figures, why = adapter_ops.promote(
        _store(settings), spec_skill, _base_model(settings, spec_skill),
        min_calls=settings.promote_min_calls, margin=settings.promote_margin,
        target=_target(spec_skill, target),
    )  # fmt: skip
    if json_output:
        print_json({"promoted": promoted, "reason": why, "figures": figures.model_dump()})
    elif promoted:
        console.print(f"[green]promoted[/] {figures.candidate} for {skill}: {why}")
    else:
        console.print(f"[yellow]not promoted[/] {figures.candidate} for {skill}: {why}")
    raise typer.Exit(0 if promoted else 1)


@app.command()
def rollback(skill: Annotated[str, typer.Argument(help="The skill.")]) -> None:
    """Switch the skill back to the model it ran before its last promotion."""
    settings = load_settings()
    spec_skill, _ = find_project(settings.project).find_skill(skill)
    store = _store(settings)
    was = store.route(skill).current
    route = adapter_ops.rollback(store, skill)
    console.print(f"{skill} runs on {route.current or _base_model(settings, spec_skill)} again (was {was})")


@app.command()
def status(
    skill: Annotated[str, typer.Argument(help="The skill.")],
    json_output: JsonOption = False,
) -> None:
    """The skill's route, its candidate's shadow figures, escalation rate per version, and history."""
    settings = load_settings()
    spec_skill, _ = find_project(settings.project).find_skill(skill)
    store = _store(settings, recorded=True)
    route = store.route(skill)
    base = _base_model(settings, spec_skill)
    figures = adapter_ops.shadow_figures(store, spec_skill, base, _target(spec_skill)) if route.candidate else None
    versions = store.version_figures(skill)
    events = store.events(skill)
    served = route.current or _base_model(settings, spec_skill)
    floor = _floor(settings, store, spec_skill, served)
    audits = _audits(store, spec_skill, served)
    if json_output:
        print_json({
            "route": route.model_dump(), "shadow": figures.model_dump() if figures else None, "floor": floor,
            "audits": audits,
            "versions": [{**v.model_dump(), "escalation_rate": v.escalation_rate} for v in versions],
            "events": [e.model_dump() for e in events],
        })  # fmt: skip
        return
    shadowing = f", candidate {route.candidate} on {route.shadow_rate:.0%} of calls" if route.candidate else ""
    console.print(f"{skill}: serving {served}{shadowing}")
    console.print(f"floor: {floor['shown']}")
    console.print(f"audits: {audits['shown']}")
    if figures:
        at = (f"floor {figures.candidate_floor:.4f}" if figures.candidate_floor is not None
              else f"no floor meets {figures.target:.0%}")  # fmt: skip
        console.print(
            f"shadow: {figures.calls} calls ({figures.referenced} with a reference), agreement "
            f"{figures.agreement:.2f}; coverage {figures.candidate_coverage:.1%} (candidate, {at}) vs "
            f"{figures.current_coverage:.1%} (current)"
        )
    table = Table("version", "runs", "escalation rate")
    for v in versions:
        table.add_row(v.slm_model, str(v.runs), f"{v.escalation_rate:.2f}")
    console.print(table)
    for event in events[-10:]:
        console.print(
            f"[dim]{event.action}[/] {event.adapter or 'base'} (from {event.previous or 'base'}) {event.note}"
        )


def _target(skill: Skill, given: float | None = None) -> float:
    """The precision a candidate is judged at: as given, else the skill's target, else 0.9."""
    target = given if given is not None else skill.target_precision or DEFAULT_PROMOTE_TARGET
    if not 0.0 < target < 1.0:
        raise InvalidInput(f"--target {target} must be within (0, 1): the share of kept answers that must be right")
    return target


DEFAULT_PROMOTE_TARGET = 0.9


def _floor(settings: Settings, store: DatasetStore, skill: Skill, model: str) -> dict[str, Any]:
    """The confidence floor the skill's SLM answers must meet on `model`, and where it comes from."""
    learning = Learning(store, follow_routes=False, floors_file=project_floors_file(settings))
    calibrated = asyncio.run(learning.floor(skill, model)) if skill.target_precision is not None else None
    value = serving_floor(skill, calibrated)
    if skill.manual_floor is not None:
        shown = f"{value:.3f} (min_confidence set by hand; it wins over calibration)"
    elif skill.target_precision is None:
        shown = f"{value:.3f} (min_confidence; no target_precision)"
    elif value is None:
        why = "no calibration on this model and constraint" if calibrated is None else "the calibration found none"
        shown = (f"none for target {skill.target_precision:.0%} ({why}): every SLM answer escalates; run "
                 f"`slmflow calibrate {skill.name} --data FILE`")  # fmt: skip
    else:
        assert calibrated is not None
        shown = (
            f"{value:.4f} on {skill.signal} confidence for target {skill.target_precision:.0%} ({calibrated.version})"
        )
    return {"value": value, "signal": skill.signal, "target": skill.target_precision,
            "version": calibrated.version if calibrated else None, "shown": shown}  # fmt: skip


def _audits(store: DatasetStore, skill: Skill, model: str) -> dict[str, Any]:
    """How often the LLM agreed with the kept SLM answers it audited (the last AUDIT_WINDOW)."""
    recent = store.audits(skill.name, model, AUDIT_WINDOW)
    judged = [a.agree for a in recent if a.agree is not None]
    agreed = sum(judged)
    figures: dict[str, Any] = {"audits": len(recent), "judged": len(judged), "agreed": agreed}
    if not judged:
        figures["shown"] = "none yet (5% of kept SLM answers are audited when an LLM is configured)"
        return figures
    figures["precision"] = agreed / len(judged)
    figures["lower"] = precision_lower_bound(agreed, len(judged))
    figures["upper"] = precision_upper_bound(agreed, len(judged))
    alarm = audit_alarm(recent, skill.target_precision) if skill.target_precision is not None else None
    figures["alarm"] = alarm
    shown = (f"the LLM agreed with {agreed} of {len(judged)} ({figures['precision']:.1%}; 95% bounds "
             f"{figures['lower']:.1%} to {figures['upper']:.1%})")  # fmt: skip
    figures["shown"] = shown + (f"; ALARM: {alarm}" if alarm else "")
    return figures
