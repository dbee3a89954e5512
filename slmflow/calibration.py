"""Precision targets: the confidence floor that keeps only answers the cascade can vouch for.

Given labelled outcomes (an SLM answer the cascade would keep, its confidence, and whether it was
right), `choose_floor` picks the lowest floor whose one-sided 95% Clopper-Pearson lower bound on
the precision of the answers it keeps still meets the target. Too few labels cannot meet a high
target at any floor (at 0.9 it takes at least 29 kept answers, all right; at 0.95, 59): then there
is no floor, and the skill keeps escalating. The bound is exact (the binomial tail), not a normal
approximation, which is badly wrong at the small counts and high precisions that matter here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from slmflow.skills import Label, Object, Skill

__all__ = [
    "Calibration",
    "Outcome",
    "RiskRow",
    "auroc",
    "choose_floor",
    "constraint_id",
    "min_kept",
    "precision_lower_bound",
    "precision_upper_bound",
    "risk_coverage",
]

ALPHA = 0.05
"""One-sided: the precision is at least the bound with 95% confidence."""


@dataclass(frozen=True)
class Outcome:
    """One labelled SLM answer: its confidence, whether the cascade's checks passed it (only a passed
    answer can be kept), and whether it was right."""

    confidence: float
    passed: bool
    right: bool


@dataclass(frozen=True)
class RiskRow:
    """Keeping the passed answers with confidence >= `floor`: how many, the share of all inputs, precision."""

    floor: float
    kept: int
    right: int
    coverage: float
    precision: float
    lower: float


@dataclass(frozen=True)
class Calibration:
    """The chosen floor (None: no floor meets the target) and the whole risk-coverage table."""

    target: float
    floor: float | None
    rows: list[RiskRow]
    inputs: int
    reason: str = ""
    chosen: RiskRow | None = None
    notes: list[str] = field(default_factory=list)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k, n + 1)))


def precision_lower_bound(right: int, kept: int, alpha: float = ALPHA) -> float:
    """The one-sided (1 - alpha) Clopper-Pearson lower bound on a proportion: `right` of `kept`.

    It is the p at which seeing `right` or more successes has probability `alpha` (the Beta(right,
    kept - right + 1) quantile), found by bisection on the binomial tail, which rises with p.
    """
    if not 0 <= right <= kept:
        raise ValueError(f"right ({right}) must be within 0..kept ({kept})")
    if right == 0:
        return 0.0
    if right == kept:
        return float(alpha ** (1.0 / kept))  # closed form: p^n = alpha
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if _upper_tail(right, kept, mid) < alpha:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def precision_upper_bound(right: int, kept: int, alpha: float = ALPHA) -> float:
    """The one-sided (1 - alpha) Clopper-Pearson upper bound: the lower bound of the wrong share, mirrored."""
    return 1.0 - precision_lower_bound(kept - right, kept, alpha)


def risk_coverage(outcomes: Sequence[Outcome]) -> list[RiskRow]:
    """One row per distinct confidence of a passed answer, floors ascending (coverage falling)."""
    passed = sorted((o for o in outcomes if o.passed), key=lambda o: o.confidence, reverse=True)
    rows: list[RiskRow] = []
    right = 0
    for i, outcome in enumerate(passed):
        right += outcome.right
        if i + 1 < len(passed) and passed[i + 1].confidence == outcome.confidence:
            continue  # a floor keeps every answer of equal confidence, or none of them
        kept = i + 1
        rows.append(RiskRow(floor=outcome.confidence, kept=kept, right=right, coverage=kept / max(1, len(outcomes)),
                            precision=right / kept, lower=precision_lower_bound(right, kept)))  # fmt: skip
    return rows[::-1]


def min_kept(target: float, alpha: float = ALPHA) -> int:
    """The fewest kept answers (all right) whose lower bound meets `target`."""
    return math.ceil(math.log(alpha) / math.log(target))


def choose_floor(outcomes: Sequence[Outcome], target: float) -> Calibration:
    """The lowest floor whose lower bound on precision meets `target`, with the table it was read off."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"a target precision is within (0, 1), not {target}")
    rows = risk_coverage(outcomes)
    meeting = [row for row in rows if row.lower >= target]
    if meeting:
        chosen = min(meeting, key=lambda row: row.floor)
        return Calibration(target, chosen.floor, rows, len(outcomes), chosen=chosen)
    need = min_kept(target)
    passed = sum(o.passed for o in outcomes)
    if passed < need:
        reason = (f"too few labels: {passed} passed answers, and a {target:.0%} target needs at least {need} "
                  "kept answers, all right; add labelled inputs (the skill keeps escalating meanwhile)")  # fmt: skip
    else:
        best = max(rows, key=lambda row: row.lower)
        reason = (f"no floor meets {target:.0%}: the best lower bound is {best.lower:.1%} (floor {best.floor:.3f}, "
                  f"{best.right}/{best.kept} right); the skill keeps escalating")  # fmt: skip
    return Calibration(target, None, rows, len(outcomes), reason=reason)


def auroc(outcomes: Iterable[Outcome]) -> float | None:
    """How well confidence separates right from wrong answers (ties count half); None: one class only."""
    scored = [(o.confidence, o.right) for o in outcomes]
    right = [c for c, r in scored if r]
    wrong = [c for c, r in scored if not r]
    if not right or not wrong:
        return None
    wins = 0.0
    for c in right:
        for w in wrong:
            wins += 1.0 if c > w else 0.5 if c == w else 0.0
    return wins / (len(right) * len(wrong))


def constraint_id(skill: Skill) -> str:
    """What a floor was calibrated under: the output constraint and the signal (a change voids it)."""
    output = skill.output
    if isinstance(output, Label):
        spec: object = {"labels": list(output.labels)}
    elif isinstance(output, Object):
        spec = {"schema": output.model.model_json_schema()}
    else:
        spec = {"tools": list(output.tools), "calls": [output.min_calls, output.max_calls]}
    text = json.dumps({"output": spec, "signal": skill.signal, "samples": skill.samples}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
