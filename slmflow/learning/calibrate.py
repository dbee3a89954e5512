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
from dataclasses import replace
from pathlib import Path

from slmflow.answers import Tier, input_hash
from slmflow.calibration import Calibration, Outcome, auroc, constraint_id
from slmflow.cascade import run_skill
from slmflow.graphs import GraphSpec
from slmflow.learning.evaluate import Case, matches
from slmflow.learning.store import FloorRecord
from slmflow.models import Endpoints
from slmflow.skills import Skill

__all__ = ["collect_outcomes", "floor_record"]


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


def floor_record(skill: Skill, model: str, cases: list[Case], outcomes: list[Outcome], calibration: Calibration,
                 data: Path) -> FloorRecord:  # fmt: skip
    """What is kept of a calibration: the floor, its figures, and what it was calibrated on."""
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
        "data": str(data),
    }
    return FloorRecord(
        skill=skill.name, model=model, constraint_id=constraint_id(skill), signal=skill.signal,
        target=calibration.target, floor=calibration.floor, figures=figures,
        data_hash=hashlib.sha256(data.read_bytes()).hexdigest(),
        input_hashes=sorted({input_hash(c.input) for c in cases}),
    )  # fmt: skip
