"""`slmflow calibrate`: run a skill's SLM on labelled inputs and choose the floor that meets a target.

Each input is answered by the SLM alone (no escalation, no floor: every answer its checks pass
is a candidate), and the answer is compared with the expected one. `choose_floor` then reads the
floor off the risk-coverage table. The result is stored, versioned, in the dataset store with the
hashes of the inputs it was calibrated on (an eval on the same inputs says so).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from slmflow.answers import Tier, input_hash, said
from slmflow.calibration import Calibration, Outcome, auroc, constraint_id
from slmflow.cascade import run_skill
from slmflow.graphs import GraphSpec
from slmflow.learning.evaluate import Case, matches
from slmflow.learning.store import DatasetStore, FloorRecord
from slmflow.models import Endpoints
from slmflow.results import EscalationReason
from slmflow.skills import Skill

__all__ = ["Labelled", "collect_outcomes", "floor_record", "from_file", "recorded_outcomes"]


async def collect_outcomes(
    skill: Skill, spec: GraphSpec, cases: list[Case], endpoints: Endpoints, *, model: str | None = None,
    concurrency: int = 4, progress: Callable[[int], None] | None = None,
) -> list[Outcome]:  # fmt: skip
    """One outcome per case: the SLM's answer (after its feedback retries), its confidence by the
    skill's signal, whether its checks passed, and whether it equals the expected answer."""
    bare = skill.model_copy(update={"escalate": False, "min_confidence": 0.0, "target_precision": None,
                                    **({"model": model} if model else {})})  # fmt: skip
    endpoints = replace(endpoints, llm=None, learning=None, _owned=[])  # the SLM alone, never a route
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(case: Case) -> Outcome:
        nonlocal done
        async with gate:
            result = await run_skill(bare, case.input, endpoints, tools=spec.tools)
        done += 1
        if progress is not None:
            progress(done)
        passed = result.ok and result.tier is Tier.SLM
        conf = result.confidence if result.confidence is not None else 0.0
        return Outcome(conf, passed, passed and matches(case.expected, result.answer))

    return list(await asyncio.gather(*(one(c) for c in cases)))


@dataclass(frozen=True)
class Labelled:
    """Outcomes and what they came from: a name to show, a hash of the data, the inputs' hashes."""

    outcomes: list[Outcome]
    source: str
    data_hash: str
    input_hashes: list[str]


def from_file(data: Path, cases: list[Case], outcomes: list[Outcome]) -> Labelled:
    """Outcomes of running the SLM on an eval file's cases."""
    return Labelled(outcomes, str(data), hashlib.sha256(data.read_bytes()).hexdigest(),
                    sorted({input_hash(c.input) for c in cases}))  # fmt: skip


def recorded_outcomes(store: DatasetStore, skill: Skill, model: str) -> Labelled:
    """Outcomes from what production recorded on `model`: every run whose SLM answer was followed by
    the LLM's or a reviewer's kept answer (the SLM's last answer judged against it), and every audit
    (a kept SLM answer, judged by the LLM's).

    Escalated runs are mostly the unsure ones and audits the kept ones, so together they cover both
    ends of the confidence range; runs the SLM answered alone carry no label and are left out.
    """
    outcomes: list[Outcome] = []
    ids: list[str] = []
    hashes: set[str] = set()
    for run in store.runs(skill.name):
        if run.slm_model != model or run.source not in ("llm", "human") or run.answer is None:
            continue
        slm = [a for a in run.attempts if a.get("tier") == "slm" and a.get("output") is not None]
        if not slm:
            continue
        last = slm[-1]
        passed = bool(last.get("ok")) or last.get("reason") == EscalationReason.LOW_CONFIDENCE
        right = passed and matches(run.answer, said(last.get("output")))
        outcomes.append(Outcome(float(last.get("confidence") or 0.0), passed, right))
        ids.append(run.id)
        hashes.add(run.input_hash)
    for audit in store.audits(skill.name, model, limit=100_000):
        if audit.agree is None:
            continue
        outcomes.append(Outcome(audit.confidence or 0.0, True, audit.agree))
        ids.append(audit.id)
        hashes.add(audit.input_hash)
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return Labelled(outcomes, f"recorded runs and audits of {skill.name} on {model}", digest, sorted(hashes))


def floor_record(skill: Skill, model: str, labelled: Labelled, calibration: Calibration) -> FloorRecord:
    """What is kept of a calibration: the floor, its figures, and what it was calibrated on."""
    outcomes = labelled.outcomes
    chosen = calibration.chosen
    figures = {
        "inputs": calibration.inputs,
        "passed": sum(o.passed for o in outcomes),
        "right": sum(o.right for o in outcomes),
        "auroc": auroc([o for o in outcomes if o.passed]),
        "kept": chosen.kept if chosen else 0,
        "precision": chosen.precision if chosen else None,
        "precision_lower": chosen.lower if chosen else None,
        "coverage": chosen.coverage if chosen else 0.0,
        "reason": calibration.reason,
        "data": labelled.source,
    }
    return FloorRecord(
        skill=skill.name, model=model, constraint_id=constraint_id(skill), signal=skill.signal,
        target=calibration.target, floor=calibration.floor, figures=figures, data_hash=labelled.data_hash,
        input_hashes=labelled.input_hashes,
    )  # fmt: skip
