"""What a skill run returns, and the usage that adds up into a job's: pydantic values."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_serializer

from slmflow.answers import Tier

__all__ = ["Attempt", "Escalation", "EscalationReason", "SkillResult", "TierUsage", "Usage"]


class EscalationReason(StrEnum):
    """Why an answer was not kept and the skill moved on to the next tier."""

    INVALID_OUTPUT = "invalid_output"
    """Unparseable, off-schema, cut off, or the wrong number of tool calls."""
    CHECK_FAILED = "check_failed"
    """A domain check rejected the answer."""
    LOW_CONFIDENCE = "low_confidence"
    """The answer's confidence was below the skill's floor, or no calibrated floor vouches for it."""
    TOOL_ERROR = "tool_error"
    """A tool call was not granted, had invalid arguments, or failed when run."""
    TIMEOUT = "timeout"
    """The endpoint did not answer within the request timeout."""
    MODEL_UNAVAILABLE = "model_unavailable"
    """The endpoint refused the connection or answered an error."""


class Attempt(BaseModel):
    """One model call and its verdict."""

    tier: Tier
    number: int
    model: str
    ok: bool
    reason: EscalationReason | None = None
    errors: list[str] = Field(default_factory=list)
    confidence: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    output: Any = None
    """What the model answered (text, or tool calls as written); None when no answer came."""


class Escalation(BaseModel):
    """One hop up the cascade: from a tier to the next (`llm`) or to a human (`review`)."""

    skill: str
    step: str | None = None
    from_tier: Tier
    to: Literal["llm", "review"]
    reason: EscalationReason
    detail: str


class TierUsage(BaseModel):
    """Calls, tokens and time spent on one tier."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0

    @field_serializer("latency_s", "cost")
    def _rounded(self, value: float) -> float:
        return round(value, 8)


class Usage(BaseModel):
    """Usage by tier, plus what the same work would have cost on the LLM alone."""

    tiers: dict[Tier, TierUsage] = Field(default_factory=dict)
    all_llm_cost: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost(self) -> float:
        """Estimated cost of what actually ran."""
        return round(sum(t.cost for t in self.tiers.values()), 8)

    def calls(self, tier: Tier) -> int:
        """Model calls made on `tier` (0 when none)."""
        return self.tiers[tier].calls if tier in self.tiers else 0

    def tokens(self, tier: Tier) -> tuple[int, int]:
        """Input and output tokens spent on `tier`."""
        usage = self.tiers.get(tier, TierUsage())
        return usage.input_tokens, usage.output_tokens

    def add_attempt(self, attempt: Attempt, cost: float) -> None:
        """Count one model call."""
        self.add_call(attempt.tier, attempt.input_tokens, attempt.output_tokens, attempt.latency_s, cost)

    def add_call(self, tier: Tier, input_tokens: int, output_tokens: int, latency_s: float, cost: float) -> None:
        """Count one model call that is not an attempt (e.g. the samples that score an answer)."""
        usage = self.tiers.setdefault(tier, TierUsage())
        usage.calls += 1
        usage.input_tokens += input_tokens
        usage.output_tokens += output_tokens
        usage.latency_s += latency_s
        usage.cost += cost

    def merge(self, other: Usage) -> None:
        """Add another usage into this one."""
        for tier, theirs in other.tiers.items():
            mine = self.tiers.setdefault(tier, TierUsage())
            mine.calls += theirs.calls
            mine.input_tokens += theirs.input_tokens
            mine.output_tokens += theirs.output_tokens
            mine.latency_s += theirs.latency_s
            mine.cost += theirs.cost
        self.all_llm_cost += other.all_llm_cost


class SkillResult(BaseModel):
    """A skill run: its kept answer (if any), who gave it, and everything spent on the way."""

    skill: str
    status: Literal["ok", "needs_review", "proposed"]
    """`proposed`: the answer calls tools that need approval; they have not run."""
    answer: Any = None
    """The checked answer: a label, the object as a dict, or the tool calls with results."""
    tier: Tier | None = None
    confidence: float | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    escalations: list[Escalation] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    narrowed: dict[str, Any] | None = None
    """The input's narrowing of the answer (`Skill.narrow`), when there was one."""

    @property
    def ok(self) -> bool:
        """Whether an answer passed every check."""
        return self.status == "ok"
