"""What the cascade asks of whatever learns from it: the small protocol, declared by the engine.

The engine (`cascade`, `graphs`, `jobs`) calls these and nothing else of the learning loop; the
loop (`slmflow.learning.hooks.Learning`) implements them. No hooks (`Endpoints.learning=None`)
means the base models, no shadow, nothing kept: what a bare `run_skill` gets unless the caller
passes hooks on purpose (`open_endpoints(..., learning=True)` does for `slmflow run`, eval, fleets).

`serving_model` is the one place that decides which model serves a skill.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from slmflow.results import SkillResult
from slmflow.skills import Skill
from slmflow.tools import ToolRegistry

__all__ = ["CascadeHooks", "Route", "serving_model"]


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

    async def route(self, skill: str) -> Route:
        """The skill's route; never raises (an unreadable store means the base model)."""
        ...

    async def keep_run(
        self, skill: Skill, values: Mapping[str, Any], messages: list[dict[str, Any]], tools: ToolRegistry | None,
        result: SkillResult, *, job_id: str, step: str | None, slm_model: str, rationale: str | None = None,
    ) -> None:  # fmt: skip
        """Keep one cascade run; never raises."""
        ...

    async def keep_review(
        self, skill: Skill, values: Mapping[str, Any], answer: Any, tools: ToolRegistry | None, *, job_id: str,
        step: str,
    ) -> None:  # fmt: skip
        """Keep a reviewer's accepted answer; never raises."""
        ...

    async def compare_shadow(
        self, skill: str, current: str, candidate: str, mine: tuple[bool, Any], theirs: tuple[bool, Any],
        kept: SkillResult,
    ) -> None:  # fmt: skip
        """Keep how the current model's first answer and the candidate's compare; never raises."""
        ...
