"""The `Skill` spec: what one step asks of a model, and how its answer is checked.

A skill is a frozen value. Running it is `slmflow.cascade.run_skill(skill, input, endpoints)`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slmflow.errors import InvalidInput

__all__ = ["DEFAULT_SIGNAL", "Check", "Label", "Narrow", "Object", "Output", "Signal", "Skill", "ToolCalls"]

Check = Callable[[Any, Mapping[str, Any]], Iterable[str]]
"""A domain check: (answer, skill input) -> error messages; none means the answer passes."""


class Label(BaseModel):
    """The answer is exactly one label of a fixed set (decoded as a vLLM `choice`)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["label"] = "label"
    labels: tuple[str, ...]

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError("a label skill needs at least two distinct labels")
        return labels


class Object(BaseModel):
    """The answer is a JSON object of a pydantic model (decoded against its JSON Schema)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    kind: Literal["object"] = "object"
    model: type[BaseModel]
    enums: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Top-level fields narrowed to these values (set by `Skill.narrow`, per input)."""

    def json_schema(self) -> dict[str, Any]:
        """The model's JSON Schema with the narrowed fields' `enum`s."""
        schema = self.model.model_json_schema()
        if self.enums:
            properties = dict(schema.get("properties", {}))
            for name, values in self.enums:
                properties[name] = {**_without_type(properties[name]), "enum": list(values)}
            schema = {**schema, "properties": properties}
        return schema

    def enum_errors(self, answer: BaseModel) -> list[str]:
        """Narrowed fields whose value is not one of the allowed ones."""
        data = answer.model_dump(mode="json")
        return [f"{name}: {data.get(name)!r} is not one of {list(values)}"
                for name, values in self.enums if data.get(name) not in values]  # fmt: skip


def _without_type(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's schema minus what an enum replaces (its types and their alternatives)."""
    return {k: v for k, v in prop.items() if k in ("title", "description")}


class ToolCalls(BaseModel):
    """The answer is between `min_calls` and `max_calls` calls of the granted tools."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_calls"] = "tool_calls"
    tools: tuple[str, ...]
    min_calls: int = Field(default=1, ge=0)
    max_calls: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> ToolCalls:
        if not self.tools:
            raise ValueError("a tool-calling skill must grant at least one tool")
        if self.min_calls > self.max_calls:
            raise ValueError("min_calls must not exceed max_calls")
        return self


Output = Label | Object | ToolCalls


class Narrow(BaseModel):
    """One input's narrowing of a skill's answer to the job's own data (what `Skill.narrow` returns):
    `labels` a subset of a label skill's labels; `fields` top-level fields of an object skill to the
    allowed values; `arguments` tool arguments (tool -> argument -> allowed values). The request
    decodes within it, and the answer is judged against it, on every tier and by a reviewer."""

    model_config = ConfigDict(frozen=True)
    labels: tuple[str, ...] | None = None
    fields: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    arguments: dict[str, dict[str, tuple[Any, ...]]] = Field(default_factory=dict)


Signal = Literal["auto", "joint", "mean", "mean_free", "min", "margin", "agreement"]
"""How an SLM answer's confidence is scored (see `slmflow.verdicts.logprob_signals`):
`joint` the product of the token probabilities; `mean` exp(mean token logprob); `mean_free` the
same over the tokens the model chose freely (the grammar forces the rest: they read logprob 0);
`min` the least likely token; `margin` (labels) the probability gap to the runner-up token;
`agreement` the share of `samples` sampled answers equal to the greedy one (self-consistency).
`auto`: the default of the output kind (`DEFAULT_SIGNAL`)."""

DEFAULT_SIGNAL: dict[str, Signal] = {"label": "joint", "object": "mean", "tool_calls": "mean"}

_DEFAULT_MAX_TOKENS = {"label": 16, "object": 200, "tool_calls": 160}


class Skill(BaseModel):
    """One step's ask of a model: prompt, output kind, checks, confidence floor, escalation."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """Identifier of the skill (snake_case); also its name in traces and datasets."""
    description: str = ""
    """One line on what the skill does."""
    model: str | None = None
    """Model served on the SLM endpoint (usually a LoRA adapter); None: the endpoint's default."""
    instructions: str
    """System prompt."""
    prompt: str
    """User prompt, a `str.format` template over the skill's input fields."""
    output: Output = Field(discriminator="kind")
    """What the answer is: a label, an object, or tool calls."""
    checks: tuple[Check, ...] = ()
    """Domain checks run on every parsed answer, on every tier."""
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    """SLM answers less confident than this escalate (`low_confidence`). Set explicitly, it is a
    manual override that wins over a calibrated floor."""
    target_precision: float | None = Field(default=None, gt=0.0, lt=1.0)
    """The share of kept SLM answers that must be right: the floor is calibrated to meet it
    (`slmflow calibrate`); with no usable calibration every SLM answer escalates. None: `min_confidence`."""
    confidence: Signal = "auto"
    """Which confidence signal gates the SLM's answers (and is calibrated)."""
    samples: int = Field(default=5, ge=2, le=32)
    """With `confidence="agreement"`: sampled answers per greedy one (one extra request with `n`)."""
    sample_temperature: float = Field(default=0.8, gt=0.0, le=2.0)
    """With `confidence="agreement"`: the sampling temperature (the seed is fixed per input)."""
    slm_attempts: int = Field(default=2, ge=1)
    """SLM tries, each after the first fed the previous errors."""
    llm_attempts: int = Field(default=1, ge=0)
    """LLM tries after the SLM has failed."""
    escalate: bool = True
    """Whether a failed SLM answer goes to the LLM (when one is configured)."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Cap on generated tokens; None: a default per output kind."""
    narrow: Callable[[Mapping[str, Any]], Narrow | None] | None = None
    """Narrows the answer to this input's data: `narrow(values)` returns a `Narrow` (e.g. the order
    ids an earlier lookup found) or None (no narrowing). See `slmflow.narrowing`."""

    @property
    def signal(self) -> Signal:
        """The confidence signal in use (`auto` resolved by the output kind)."""
        return DEFAULT_SIGNAL[self.output.kind] if self.confidence == "auto" else self.confidence

    @property
    def manual_floor(self) -> float | None:
        """`min_confidence` when set explicitly (it wins over calibration), else None."""
        return self.min_confidence if "min_confidence" in self.model_fields_set else None

    def at_target(self, precision: float) -> Skill:
        """This skill asking for `precision` instead: served by floors calibrated for it, with no
        hand-set `min_confidence` overriding them."""
        copy = self.model_copy(update={"target_precision": precision, "min_confidence": 0.0})
        copy.model_fields_set.discard("min_confidence")
        return copy

    @model_validator(mode="after")
    def _signal_fits(self) -> Skill:
        if self.confidence == "margin" and not isinstance(self.output, Label):
            raise ValueError("confidence='margin' is for label skills (the gap to the runner-up label)")
        return self

    @property
    def token_budget(self) -> int:
        """`max_tokens`, or the default for the output kind."""
        return self.max_tokens or _DEFAULT_MAX_TOKENS[self.output.kind]

    @property
    def input_fields(self) -> list[str]:
        """Names the prompt template uses."""
        return [f for _, f, _, _ in string.Formatter().parse(self.prompt) if f]

    def render_prompt(self, values: Mapping[str, Any]) -> str:
        """The user prompt for this input; a missing field is `InvalidInput`."""
        missing = [f for f in self.input_fields if f.split(".")[0] not in values]
        if missing:
            raise InvalidInput(
                f"skill {self.name!r} needs input fields {missing}; got {sorted(values)}",
                skill=self.name,
            )
        return self.prompt.format_map(dict(values))
