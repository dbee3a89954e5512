"""What the cascade asks of whatever learns from it: the small protocol, declared by the engine.

The engine (`cascade`, `graphs`, `jobs`) calls these and nothing else of the learning loop; the
loop (`slmflow.learning.hooks.Learning`) implements them. No hooks (`Endpoints.learning=None`)
means the base models, no shadow, nothing kept: what a bare `run_skill` gets unless the caller
passes hooks on purpose (`open_endpoints(..., learning=True)` does for `slmflow run`, eval, fleets).

`serving_model` and `serving_floor` are the one place that decides which model serves a skill
and which confidence floor its answers must meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from slmflow.answers import Judged
from slmflow.calibration import constraint_id
from slmflow.results import SkillResult
from slmflow.skills import Skill
from slmflow.tools import ToolRegistry

__all__ = ["CascadeHooks", "Floor", "Route", "serving_floor", "serving_model"]


@dataclass(frozen=True)
class Route:
    """Which adapter serves a skill (`current`; None: the skill's model) and a candidate in shadow."""

    skill: str
    current: str | None = None
    candidate: str | None = None
    shadow_rate: float = 0.0


def serving_model(skill: Skill, route: Route | None, default: str) -> str:
    """The model or adapter that answers for `skill` on the SLM tier: a promoted adapter first,
    then the skill's own `model`, then the endpoint's default model."""
    if route is not None and route.current:
        return route.current
    return skill.model or default


class CascadeHooks(Protocol):
    """Routes, shadow comparison and recording, as the cascade calls them."""

    @property
    def record(self) -> bool:
        """Keep every run (redacted) for training."""
        ...

    @property
    def rationale(self) -> bool:
        """Ask the LLM for a one-sentence rationale of each answer it gives (while recording)."""
        ...

    @property
    def audit_rate(self) -> float:
        """Share of kept SLM answers the LLM also answers, off the job's path (0: no audits)."""
        ...

    async def keep_audit(self, skill: Skill, model: str, values: Mapping[str, Any], confidence: float | None,
                         agree: bool | None, llm_answer: Any) -> None:  # fmt: skip
        """Keep one audit and raise the alarm when precision is seen falling; never raises."""
        ...

    async def route(self, skill: str) -> Route:
        """The skill's route; never raises (an unreadable store means the base model)."""
        ...

    async def floor(self, skill: Skill, model: str) -> Floor | None:
        """The latest calibrated floor of `skill` on `model` (None: never calibrated); never raises."""
        ...

    async def keep_run(
        self, skill: Skill, values: Mapping[str, Any], messages: list[dict[str, Any]], tools: ToolRegistry | None,
        result: SkillResult, *, job_id: str, step: str | None, slm_model: str, rationale: str | None = None,
    ) -> None:  # fmt: skip
        """Keep one cascade run; never raises."""
        ...

    async def keep_review(
        self, skill: Skill, values: Mapping[str, Any], answer: Any, tools: ToolRegistry | None, *, job_id: str,
        step: str, meta: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Keep a reviewer's accepted answer (or the tool calls a person approved); never raises."""
        ...

    async def compare_shadow(
        self, skill: str, current: str, candidate: str, mine: Judged, theirs: Judged, reference: Any,
        source: str | None, input_hash: str,
    ) -> None:  # fmt: skip
        """Keep how the current model's first answer and the candidate's compare, each against
        `reference` (the LLM's or a reviewer's answer, by `source`; None: there is none); never raises."""
        ...


@dataclass(frozen=True)
class Floor:
    """A calibrated floor: keep SLM answers whose `signal` confidence is at least `value`, which
    met `target` precision (by the Clopper-Pearson bound) on the model under `constraint_id`.
    `value` None: calibrated, and no floor met the target."""

    value: float | None
    target: float
    signal: str
    constraint_id: str
    version: str = ""
    """Where it comes from: a dataset-store calibration id, or the project's floors file."""


def serving_floor(skill: Skill, calibrated: Floor | None) -> float | None:
    """The confidence floor an SLM answer of `skill` must meet; None: nothing can vouch for it
    (escalate every answer).

    A `min_confidence` set explicitly wins (a manual override). With no `target_precision`, the
    floor is `min_confidence` (default 0: keep every passing answer). With a target, the calibrated
    floor serves when it was calibrated under this constraint and signal for at least this target.
    """
    if skill.manual_floor is not None:
        return skill.manual_floor
    if skill.target_precision is None:
        return skill.min_confidence
    if calibrated is None or calibrated.value is None:
        return None
    if calibrated.constraint_id != constraint_id(skill) or calibrated.signal != skill.signal:
        return None  # calibrated under another constraint or signal: it vouches for nothing here
    if calibrated.target < skill.target_precision:
        return None
    return calibrated.value
