"""`slmflow eval`: a skill or a graph against expected answers, per model, per slice, with a plot.

The data is JSONL, one case per line: `{"input": {...}, "expected": ..., <slice fields>...}`. For a
skill, `expected` is its answer (a label, an object, or tool calls by name and arguments); for a
graph, the fields the job's output must have (a subset: other output fields are not compared), or
for a job that stops to wait for approval, `{"awaiting_approval": {"tool": ..., <arguments>...}}`:
the first call it proposes (nothing is approved in an evaluation, so no side effect runs).

An evaluation never follows adapter routes: it measures exactly the models it is given. It records
its runs in the dataset store only when asked (`record`, e.g. to backfill training data from past
inputs with the LLM answering what the SLM escalates). With no LLM configured an escalated case
counts as unanswered, and its cost is projected at the LLM's price for the same tokens (what
answering it would have cost).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from slmflow.answers import Tier, answer_key, said
from slmflow.calibration import Outcome, risk_coverage
from slmflow.cascade import run_skill
from slmflow.checkpoints import open_checkpointer
from slmflow.errors import InvalidInput
from slmflow.graphs import GraphSpec
from slmflow.jobs import run_job
from slmflow.learning.hooks import Learning
from slmflow.models import Endpoints
from slmflow.outcomes import JobResult, JobStatus
from slmflow.results import EscalationReason, Usage
from slmflow.skills import Skill

TARGETS = (0.8, 0.9, 0.95)
"""The precisions `coverage_at` reports."""

__all__ = [
    "TARGETS", "Case", "CaseResult", "ModelReport", "evaluate", "matches", "outcome", "plot_reports", "read_cases",
]  # fmt: skip


class Case(BaseModel):
    """One evaluation case."""

    input: dict[str, Any]
    expected: Any
    slices: dict[str, str] = Field(default_factory=dict)


class CaseResult(BaseModel):
    """How one model did on one case."""

    correct: bool
    slm_correct: bool
    escalated: bool
    reasons: list[str]
    usage: Usage
    """Model calls and tokens per tier."""
    latency_s: float
    cost: float
    all_llm_cost: float
    slices: dict[str, str]
    slm_passed: bool = False
    """Whether the SLM's last answer passed its checks (kept, or gated only by its confidence)."""
    slm_confidence: float | None = None


class SliceFigures(BaseModel):
    """Figures of the cases with one value of a slice field."""

    cases: int
    accuracy: float
    escalation_rate: float


class ModelReport(BaseModel):
    """How one model did on the whole data set."""

    target: str
    model: str
    cases: int
    accuracy: float
    """Cases whose kept answer (any tier) was right; an escalation nobody answered is wrong."""
    slm_accuracy: float
    """Cases the SLM answered right on its own (kept or not)."""
    precision: float | None = None
    """Of the SLM answers the cascade kept (no escalation), the share that were right; None: none kept."""
    coverage: float = 0.0
    """Cases whose SLM answer was kept."""
    accepted_wrong: int = 0
    """Kept SLM answers that were wrong: what a precision target is there to bound."""
    escalation_rate: float
    reasons: dict[str, int]
    usage: Usage
    """Model calls and tokens per tier, over all cases (what ran: no projection)."""
    latency_p50_s: float
    latency_p95_s: float
    cost_per_100: float
    """Cost of 100 cases: what ran, plus escalations priced at the LLM when no LLM answered them."""
    all_llm_cost_per_100: float
    slices: dict[str, dict[str, SliceFigures]] = Field(default_factory=dict)
    curve: list[dict[str, float]] = Field(default_factory=list)
    """The risk-coverage curve of the SLM's answers on these cases (skills): keeping those with
    confidence >= `floor`, the `coverage` and `precision`; floors ascending."""
    coverage_at: dict[str, float | None] = Field(default_factory=dict)
    """For a precision of 0.8, 0.9 and 0.95: the largest coverage whose precision on these cases
    reaches it (a point estimate on the eval's own data, not a calibrated bound); None: none does."""


def read_cases(path: Path, slice_field: str | None = None) -> list[Case]:
    """The cases of a JSONL file; a bad line is `InvalidInput` naming it."""
    if not path.is_file():
        raise InvalidInput(f"no evaluation data at {path}: give a JSONL file of {{'input': ..., 'expected': ...}}")
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            slices = {
                k: str(v) for k, v in data.items() if k not in ("input", "expected") and not isinstance(v, dict | list)
            }
            case = Case(input=data["input"], expected=data["expected"], slices=slices)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
            raise InvalidInput(
                f"{path}:{number}: expected a JSON object with an 'input' object and 'expected'"
            ) from None
        if slice_field and slice_field not in slices:
            raise InvalidInput(
                f"{path}:{number} has no field {slice_field!r} to slice by (fields: {', '.join(slices)})"
            )
        cases.append(case)
    if not cases:
        raise InvalidInput(f"{path} holds no cases")
    return cases


def matches(expected: Any, actual: Any) -> bool:
    """Whether an answer is the expected one (objects: every expected field; numbers within 1e-6)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, float | int) and isinstance(actual, float | int):
        return abs(float(expected) - float(actual)) < 1e-6
    if isinstance(expected, list) and isinstance(actual, list):
        return answer_key(expected) == answer_key(actual)
    return bool(expected == actual)


def _slm_answer(result: Any) -> Any:
    """The SLM's last answer as written (a label's text, a parsed object, or tool calls)."""
    slm = [a for a in result.attempts if a.tier == Tier.SLM and a.output is not None]
    if not slm:
        return None
    return said(slm[-1].output)


async def _skill_case(skill: Skill, case: Case, endpoints: Endpoints, spec: GraphSpec) -> CaseResult:
    started = time.perf_counter()
    result = await run_skill(skill, case.input, endpoints, tools=spec.tools)
    latency = time.perf_counter() - started
    slm = [a for a in result.attempts if a.tier is Tier.SLM and a.output is not None]
    usage = result.usage
    escalated = result.tier is not Tier.SLM
    cost = usage.cost + (usage.all_llm_cost if escalated and Tier.LLM not in usage.tiers else 0.0)
    return CaseResult(
        correct=result.ok and matches(case.expected, result.answer),
        slm_correct=matches(case.expected, _slm_answer(result)),
        escalated=escalated,
        reasons=[str(e.reason) for e in result.escalations if e.from_tier is Tier.SLM],
        usage=usage,
        latency_s=latency,
        cost=cost,
        all_llm_cost=usage.all_llm_cost,
        slices=case.slices,
        slm_passed=bool(slm and (slm[-1].ok or slm[-1].reason is EscalationReason.LOW_CONFIDENCE)),
        slm_confidence=slm[-1].confidence if slm else None,
    )  # fmt: skip


def outcome(job: JobResult) -> dict[str, Any]:
    """What a graph case is scored on: the output of a job that succeeded; for one that waits for
    approval (no human answers in an evaluation), the first call it proposes, as
    `{"awaiting_approval": {"tool": name, **arguments}}`."""
    if job.status == JobStatus.AWAITING_APPROVAL and job.approval and job.approval.calls:
        call = job.approval.calls[0]
        return {"awaiting_approval": {"tool": call.name, **call.arguments}}
    return job.output or {}


async def _graph_case(spec: GraphSpec, case: Case, endpoints: Endpoints) -> CaseResult:
    started = time.perf_counter()
    async with open_checkpointer("memory") as checkpointer:
        job = await run_job(spec, case.input, endpoints=endpoints, checkpointer=checkpointer)
    latency = time.perf_counter() - started
    usage = job.usage
    escalated = bool(usage.escalations)
    projected = 0.0
    if escalated and not usage.calls(Tier.LLM):
        projected = usage.all_llm_cost / max(1, len(spec.skills)) * len(usage.escalations)
    right = job.status in (JobStatus.SUCCEEDED, JobStatus.AWAITING_APPROVAL) and matches(case.expected, outcome(job))
    return CaseResult(
        correct=right,
        slm_correct=right and not escalated,
        escalated=escalated,
        reasons=[str(e.reason) for e in usage.escalations],
        usage=Usage(tiers=usage.tiers, all_llm_cost=usage.all_llm_cost),
        latency_s=latency,
        cost=usage.cost + projected,
        all_llm_cost=usage.all_llm_cost,
        slices=case.slices,
    )


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _report(target: str, model: str, results: list[CaseResult], slice_field: str | None) -> ModelReport:
    n = len(results)
    usage = Usage()
    reasons: Counter[str] = Counter()
    for r in results:
        usage.merge(r.usage)
        reasons.update(r.reasons)
    slices: dict[str, dict[str, SliceFigures]] = {}
    if slice_field:
        groups: dict[str, list[CaseResult]] = {}
        for r in results:
            groups.setdefault(r.slices[slice_field], []).append(r)
        slices[slice_field] = {
            value: SliceFigures(
                cases=len(group),
                accuracy=sum(r.correct for r in group) / len(group),
                escalation_rate=sum(r.escalated for r in group) / len(group),
            )
            for value, group in sorted(groups.items())
        }
    latencies = [r.latency_s for r in results]
    kept = [r for r in results if not r.escalated]
    kept_right = sum(r.correct for r in kept)
    outcomes = [Outcome(r.slm_confidence or 0.0, r.slm_passed, r.slm_correct) for r in results]
    rows = risk_coverage(outcomes) if any(r.slm_passed for r in results) else []
    return ModelReport(
        curve=[{"floor": r.floor, "coverage": r.coverage, "precision": r.precision} for r in rows],
        coverage_at={str(t): max((r.coverage for r in rows if r.precision >= t), default=None) for t in TARGETS},
        precision=kept_right / len(kept) if kept else None,
        coverage=len(kept) / n,
        accepted_wrong=len(kept) - kept_right,
        target=target,
        model=model,
        cases=n,
        accuracy=sum(r.correct for r in results) / n,
        slm_accuracy=sum(r.slm_correct for r in results) / n,
        escalation_rate=sum(r.escalated for r in results) / n,
        reasons=dict(reasons.most_common()),
        usage=usage,
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        cost_per_100=100 * sum(r.cost for r in results) / n,
        all_llm_cost_per_100=100 * sum(r.all_llm_cost for r in results) / n,
        slices=slices,
    )


async def evaluate(
    target: Skill | GraphSpec,
    spec: GraphSpec,
    cases: list[Case],
    endpoints: Endpoints,
    *,
    model: str | None = None,
    slice_field: str | None = None,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
    record: Learning | None = None,
    hooks: Learning | None = None,
) -> ModelReport:
    """Run every case on `model` (None: the endpoint's default) and sum up how it did.

    `hooks` give the calibrated floors (a skill with a target precision runs at its floor, as in
    production); `record` also keeps every run. Neither ever follows an adapter route.
    """
    source = record or hooks
    learning = None
    if source is not None:
        learning = Learning(source.store, record=record is not None, rationale=source.rationale, follow_routes=False,
                            redactor=source.redactor, floors_file=source.floors_file)  # fmt: skip
    endpoints = replace(endpoints, learning=learning, _owned=[])  # the model given, never a route
    name = model or endpoints.slm.endpoint.default_model
    if model is not None:
        endpoints = replace(endpoints, slm=endpoints.slm.with_default_model(model))
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(case: Case) -> CaseResult:
        nonlocal done
        async with gate:
            if isinstance(target, Skill):
                skill = target.model_copy(update={"model": model}) if model else target
                result = await _skill_case(skill, case, endpoints, spec)
            else:
                result = await _graph_case(target, case, endpoints)
        done += 1
        if progress is not None:
            progress(done)
        return result

    results = await asyncio.gather(*(one(c) for c in cases))
    return _report(target.name, name, list(results), slice_field)


def plot_reports(reports: list[ModelReport], path: Path, slice_field: str | None = None) -> Path:
    """A PNG: accuracy, SLM accuracy and escalation rate per model (accuracy per slice; for a skill,
    the risk-coverage curve per model with its floor marked)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInput("--plot needs matplotlib: pip install -e '.[train]'") from None
    curves = any(r.curve for r in reports)
    panels = 1 + bool(slice_field) + curves
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    metrics = [("accuracy", "accuracy"), ("slm_accuracy", "SLM alone right"), ("escalation_rate", "escalation rate")]
    width = 0.8 / len(reports)
    ax = axes[0][0]
    for index, report in enumerate(reports):
        xs = [m + index * width for m in range(len(metrics))]
        values = [getattr(report, key) for key, _ in metrics]
        bars = ax.bar(xs, values, width, label=report.model)
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=8)
    ax.set_xticks([m + width * (len(reports) - 1) / 2 for m in range(len(metrics))], [label for _, label in metrics])
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{reports[0].target}: {reports[0].cases} cases")
    ax.legend(fontsize=8)
    if slice_field:
        ax = axes[0][1]
        values_by_slice = sorted({v for r in reports for v in r.slices.get(slice_field, {})})
        for index, report in enumerate(reports):
            figures = report.slices.get(slice_field, {})
            xs = [m + index * width for m in range(len(values_by_slice))]
            values = [figures[v].accuracy if v in figures else 0.0 for v in values_by_slice]
            bars = ax.bar(xs, values, width, label=report.model)
            ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=8)
        ticks = [m + width * (len(reports) - 1) / 2 for m in range(len(values_by_slice))]
        ax.set_xticks(ticks, values_by_slice)
        ax.set_ylim(0, 1.1)
        ax.set_title(f"accuracy by {slice_field}")
        ax.legend(fontsize=8)
    if curves:
        ax = axes[0][panels - 1]
        for report in reports:
            if not report.curve:
                continue
            line = ax.plot([p["coverage"] for p in report.curve], [p["precision"] for p in report.curve],
                           label=report.model, linewidth=1.4)  # fmt: skip
            if report.precision is not None:  # where the calibrated (or hand-set) floor kept answers
                ax.plot([report.coverage], [report.precision], marker="o", color=line[0].get_color())
                ax.annotate("floor", (report.coverage, report.precision), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")  # fmt: skip
        for target in TARGETS:
            ax.axhline(target, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("coverage (SLM answers kept)")
        ax.set_ylabel("precision of kept answers")
        ax.set_title("risk and coverage")
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
