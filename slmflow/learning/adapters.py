"""Adapters: the folders a server serves, loading one into a running vLLM, and the promotion gate.

A skill's route says which adapter serves it (`current`, None for the base model) and which one
runs beside it in shadow (`candidate`, on a `shadow_rate` sample of live calls). `promote` switches
to the candidate only on correctness: on the shadow calls that have a reference (the LLM's answer
to an escalation or an audit), the candidate's floor is calibrated by the same
bound rule as `slmflow calibrate`, and the candidate must keep more of the calls at that floor than
the current model keeps at its own. A higher pass rate alone never promotes. The floor it was judged
at is stored with the promotion, so the candidate serves at it. `rollback` switches back. Every
change, and every refusal, is an event with its figures.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, computed_field

from slmflow.calibration import Calibration, Outcome, choose_floor, constraint_id
from slmflow.errors import EndpointUnreachable, InvalidInput, UsageError
from slmflow.learning.store import AdapterEvent, DatasetStore, FloorRecord, Route, ShadowCall
from slmflow.local_server import load_adapter, server_is_up
from slmflow.redaction import mask_url
from slmflow.skills import Skill

__all__ = [
    "ShadowFigures",
    "load_adapter",
    "promote",
    "rollback",
    "shadow_figures",
    "require_served",
    "start_shadow",
    "validate_rate",
]


class ShadowFigures(BaseModel):
    """How a candidate did beside the current model on the same live calls, scored for correctness."""

    skill: str
    current: str
    candidate: str
    target: float
    """The precision the candidate's kept answers must be vouched for at (the skill's target)."""
    calls: int
    agreement: float
    current_pass_rate: float
    """Share of calls whose first answer the current model kept (checks and its serving floor)."""
    candidate_pass_rate: float
    """Share of calls whose answer passed the candidate's checks (before any floor)."""
    referenced: int
    """Calls with a reference answer (the LLM's, from an escalation or an audit)."""
    current_accuracy: float | None
    candidate_accuracy: float | None
    current_precision: float | None
    """Share of the current model's kept answers that were right, on referenced calls."""
    candidate_floor: float | None
    """The lowest floor at which the candidate's precision on referenced calls meets the target by the
    95% Clopper-Pearson bound; None: none does (the reason says why)."""
    candidate_precision: float | None
    candidate_precision_lower: float | None
    candidate_coverage: float
    """Share of calls the candidate would keep at its floor (0 without one)."""
    calibration: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def current_coverage(self) -> float:
        """Share of calls the current model kept: its pass rate, which includes its serving floor."""
        return self.current_pass_rate

    @classmethod
    def of(cls, skill: str, current: str, candidate: str, calls: list[ShadowCall], target: float) -> ShadowFigures:
        """Figures over a list of shadow calls, the candidate's floor calibrated on the referenced ones."""
        n = len(calls)
        referenced = [c for c in calls if c.candidate_right is not None]

        def rate(values: list[bool]) -> float:
            return sum(values) / len(values) if values else 0.0

        calibration = _candidate_floor(referenced, target)
        floor = calibration.floor
        kept = [c for c in calls if c.candidate_ok and floor is not None and (c.candidate_confidence or 0.0) >= floor]
        current_kept = [c for c in referenced if c.current_ok]
        chosen = calibration.chosen
        return cls(
            skill=skill,
            current=current,
            candidate=candidate,
            target=target,
            calls=n,
            agreement=rate([c.agree for c in calls]),
            current_pass_rate=rate([c.current_ok for c in calls]),
            candidate_pass_rate=rate([c.candidate_ok for c in calls]),
            referenced=len(referenced),
            current_accuracy=rate([bool(c.current_right) for c in referenced]) if referenced else None,
            candidate_accuracy=rate([bool(c.candidate_right) for c in referenced]) if referenced else None,
            current_precision=rate([bool(c.current_right) for c in current_kept]) if current_kept else None,
            candidate_floor=floor,
            candidate_precision=chosen.precision if chosen else None,
            candidate_precision_lower=chosen.lower if chosen else None,
            candidate_coverage=len(kept) / n if n else 0.0,
            calibration=calibration.reason,
        )


def _candidate_floor(referenced: list[ShadowCall], target: float) -> Calibration:
    """The candidate's floor, by the calibration's own rule, on the calls that have a reference."""
    outcomes = [Outcome(c.candidate_confidence or 0.0, c.candidate_ok, bool(c.candidate_right)) for c in referenced]
    return choose_floor(outcomes, target)


def _current_name(route: Route, base_model: str) -> str:
    return route.current or base_model


def validate_rate(rate: float) -> float:
    """A shadow sample rate, or `InvalidInput` saying what it must be."""
    if not 0.0 < rate <= 1.0:
        raise InvalidInput(f"shadow rate {rate} must be in (0, 1]: the share of live calls the candidate also answers")
    return rate


def require_served(base_url: str, name: str) -> None:
    """Fail unless the server at `base_url` serves model `name` (a shadow of nothing helps no one)."""
    served = server_is_up(base_url, timeout=10.0)
    if served is None:
        raise EndpointUnreachable(
            f"nothing answers at {mask_url(base_url)}: start the model server, then load the adapter"
        )
    if name not in served:
        raise UsageError(
            f"{mask_url(base_url)} does not serve {name!r} (it serves: {', '.join(served)}): "
            "load it first with `slmflow distill load ADAPTER_DIR`"
        )


def start_shadow(store: DatasetStore, skill: str, candidate: str, rate: float) -> Route:
    """Run `candidate` beside the skill's current model on a `rate` sample of live calls."""
    validate_rate(rate)
    route = store.route(skill)
    if candidate == route.current:
        raise InvalidInput(f"{candidate!r} already serves {skill}: shadow a different adapter")
    new = route.model_copy(update={"candidate": candidate, "shadow_rate": rate})
    store.set_route(new, AdapterEvent(skill=skill, action="shadow", adapter=candidate, previous=route.current,
                                      figures={"shadow_rate": rate}))  # fmt: skip
    return new


def shadow_figures(store: DatasetStore, skill: Skill, base_model: str, target: float) -> ShadowFigures:
    """The shadow figures of the skill's candidate against its current model, at `target` precision."""
    return _shadow(store, skill, base_model, target)[1]


def _shadow(store: DatasetStore, skill: Skill, base_model: str, target: float) -> tuple[
        Route, ShadowFigures, list[ShadowCall]]:  # fmt: skip
    route = store.route(skill.name)
    if not route.candidate:
        raise InvalidInput(
            f"{skill.name} has no candidate in shadow: start one with `slmflow distill shadow {skill.name} ADAPTER`"
        )
    current = _current_name(route, base_model)
    calls = store.shadow_calls(skill.name, route.candidate, current)
    return route, ShadowFigures.of(skill.name, current, route.candidate, calls, target), calls


def promote(
    store: DatasetStore, skill: Skill, base_model: str, *, min_calls: int, margin: float, target: float
) -> tuple[bool, ShadowFigures, str]:
    """Switch the skill to its candidate if it is right often enough where it answers and answers more
    often than the current model; (promoted, figures, why). The candidate's floor is stored with it."""
    route, figures, calls = _shadow(store, skill, base_model, target)
    why = _refusal(figures, min_calls, margin)
    data: dict[str, Any] = {**figures.model_dump(), "min_calls": min_calls, "margin": margin}
    if why:
        store.add_event(AdapterEvent(skill=skill.name, action="refuse", adapter=route.candidate,
                                     previous=route.current, figures=data, note=why))  # fmt: skip
        return False, figures, why
    assert figures.candidate_precision is not None and figures.candidate_precision_lower is not None
    why = (
        f"precision {figures.candidate_precision:.1%} (95% bound {figures.candidate_precision_lower:.1%} >= target "
        f"{target:.0%}) on {figures.referenced} referenced calls at floor {figures.candidate_floor:.4f}; coverage "
        f"{figures.candidate_coverage:.1%} against {figures.current_coverage:.1%} over {figures.calls} calls"
    )
    store.add_floor(_promoted_floor(skill, figures, calls))
    new = Route(skill=skill.name, current=route.candidate, previous=route.current, candidate=None, shadow_rate=0.0)
    store.set_route(new, AdapterEvent(skill=skill.name, action="promote", adapter=route.candidate,
                                      previous=route.current, figures=data, note=why))  # fmt: skip
    return True, figures, why


def _promoted_floor(skill: Skill, figures: ShadowFigures, calls: list[ShadowCall]) -> FloorRecord:
    """The floor the candidate was judged at, versioned like a calibration, so it serves at it."""
    hashes = sorted({c.input_hash for c in calls if c.candidate_right is not None and c.input_hash})
    return FloorRecord(
        skill=skill.name, model=figures.candidate, constraint_id=constraint_id(skill), signal=skill.signal,
        target=figures.target, floor=figures.candidate_floor,
        figures={"kept": round(figures.candidate_coverage * figures.calls), "precision": figures.candidate_precision,
                 "precision_lower": figures.candidate_precision_lower, "coverage": figures.candidate_coverage,
                 "inputs": figures.referenced, "data": f"shadow calls beside {figures.current} (promotion)"},
        data_hash=hashlib.sha256("\n".join(hashes).encode()).hexdigest(), input_hashes=hashes,
    )  # fmt: skip


def _refusal(figures: ShadowFigures, min_calls: int, margin: float) -> str | None:
    if figures.calls < min_calls:
        return f"only {figures.calls} shadow calls of the {min_calls} needed (SLMFLOW_PROMOTE_MIN_CALLS): wait for more"
    if figures.candidate_floor is None:
        detail = figures.calibration or "no floor meets the target"
        return (f"the candidate's precision cannot be vouched for at {figures.target:.0%} on the {figures.referenced} "
                f"shadow calls with an LLM or reviewer answer ({detail})")  # fmt: skip
    gain = figures.candidate_coverage - figures.current_coverage
    if gain <= margin:
        return (
            f"at its floor the candidate keeps {figures.candidate_coverage:.1%} of calls against "
            f"{figures.current_coverage:.1%} for the current model: a gain of {gain:+.1%}, not above the margin of "
            f"{margin:.0%} (SLMFLOW_PROMOTE_MARGIN)"
        )
    return None


def rollback(store: DatasetStore, skill: str) -> Route:
    """Switch the skill back to the model it used before its last promotion."""
    route = store.route(skill)
    if route.current is None:
        raise InvalidInput(f"{skill} runs on the base model: there is nothing to roll back")
    if route.previous is None and any(e.action == "rollback" for e in store.events(skill)[-1:]):
        raise InvalidInput(f"{skill} was just rolled back: promote a candidate to move forward again")
    versions = {v.slm_model: v for v in store.version_figures(skill)}
    figures = {
        name: {"runs": v.runs, "escalation_rate": v.escalation_rate}
        for name in (route.current, route.previous) if name and (v := versions.get(name))
    }  # fmt: skip
    # No way forward again by rolling back twice: the rolled-back adapter must be promoted anew.
    new = Route(skill=skill, current=route.previous, previous=None, candidate=None, shadow_rate=0.0)
    store.set_route(new, AdapterEvent(skill=skill, action="rollback", adapter=route.previous, previous=route.current,
                                      figures=figures, note=f"back from {route.current}"))  # fmt: skip
    return new
