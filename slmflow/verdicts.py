"""How an answer is asked for (constrained decoding) and judged (parse, schema, checks, confidence).

Confidence comes from the returned token logprobs, which vLLM reports after the grammar mask: for
a label (a `choice`) the product of its tokens' probabilities is the label's probability among the
allowed ones; for objects and tool calls the mean token logprob separated right from wrong answers
best on SmolLM2 (AUROC 0.80 against 0.75 for the minimum), so confidence is `exp(mean)`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from slmflow.answers import answer_key
from slmflow.errors import ToolError, ToolNotGranted
from slmflow.models import Completion, Dialect
from slmflow.redaction import excerpt
from slmflow.results import EscalationReason
from slmflow.skills import Label, Object, Skill, ToolCalls
from slmflow.tools import ToolCall, ToolRegistry

__all__ = [
    "FORCED_LOGPROB", "Verdict", "agreement", "approval_errors", "confidence", "constraint", "gate", "judge",
    "kept_form", "logprob_signals", "review_errors", "scoring_fields",
]  # fmt: skip


@dataclass
class Verdict:
    """Whether an answer is kept; if not, why (one reason) and what to tell the model."""

    ok: bool
    answer: Any = None
    reason: EscalationReason | None = None
    errors: list[str] = field(default_factory=list)
    confidence: float | None = None

    @classmethod
    def reject(cls, reason: EscalationReason, *errors: str, confidence: float | None = None) -> Verdict:
        """A failed verdict."""
        return cls(ok=False, reason=reason, errors=list(errors), confidence=confidence)


def _label_schema(labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def constraint(skill: Skill, dialect: Dialect, tools: ToolRegistry | None) -> dict[str, Any]:
    """Request fields that make the server decode only well-formed answers for this skill."""
    output = skill.output
    if isinstance(output, Label):
        if dialect == "vllm":
            return {"extra_body": {"structured_outputs": {"choice": list(output.labels)}}}
        return {"response_format": _json_schema_format(skill.name, _label_schema(output.labels))}
    if isinstance(output, Object):
        return {"response_format": _json_schema_format(skill.name, output.json_schema())}
    assert tools is not None, "a tool-calling skill runs with a tool registry"
    specs = [tools.get(name) for name in output.tools]
    # One granted tool called once: name it, so that only its arguments are left to decode. A named
    # tool_choice forces exactly one call, so a skill that may call it several times gets `required`.
    named = len(specs) == 1 and output.max_calls == 1
    choice: Any = {"type": "function", "function": {"name": specs[0].name}} if named else "required"
    if output.min_calls == 0:
        choice = "auto"
    return {"tools": [s.openai_tool() for s in specs], "tool_choice": choice}


FORCED_LOGPROB = -1e-6
"""A token at or above this logprob was all but forced (by the grammar, or a certain model): it
says nothing about how sure the model was, and only dilutes a mean."""


def scoring_fields(skill: Skill) -> dict[str, Any]:
    """Request fields an SLM call needs for the skill's signal: the runner-up tokens for `margin`."""
    return {"top_logprobs": 5} if skill.signal == "margin" else {}


def logprob_signals(completion: Completion) -> dict[str, float]:
    """Every confidence signal the completion's logprobs give, each in [0, 1] (empty: no logprobs)."""
    lps = completion.token_logprobs
    if not lps:
        return {}
    free = [lp for lp in lps if lp < FORCED_LOGPROB]
    signals = {
        "joint": math.exp(sum(lps)),
        "mean": math.exp(sum(lps) / len(lps)),
        "mean_free": math.exp(sum(free) / len(free)) if free else 1.0,
        "min": math.exp(min(lps)),
    }
    if completion.runner_up_logprobs:
        gaps = [math.exp(lp) - (math.exp(ru) if ru is not None else 0.0)
                for lp, ru in zip(lps, completion.runner_up_logprobs, strict=False)]  # fmt: skip
        signals["margin"] = max(0.0, min(gaps))
    return signals


def confidence(skill: Skill, completion: Completion) -> float | None:
    """The answer's confidence in [0, 1] by the skill's logprob signal; None when none came back
    (and for `agreement`, which the cascade scores from samples)."""
    if skill.signal == "agreement":
        return None
    return logprob_signals(completion).get(skill.signal)


def gate(verdict: Verdict, conf: float | None, floor: float | None) -> Verdict:
    """Keep a passing answer only when its confidence meets the floor.

    `floor` None means no usable calibration for a precision target: nothing can vouch for the
    answer, so it escalates (`low_confidence`) whatever its confidence.
    """
    verdict.confidence = conf
    if not verdict.ok:
        return verdict
    if floor is None:
        why = "no calibrated floor meets the skill's target precision yet"
        return Verdict.reject(EscalationReason.LOW_CONFIDENCE, why, confidence=conf)
    if floor > 0 and (conf is None or conf < floor):
        shown = "none" if conf is None else f"{conf:.2f}"
        why = f"confidence {shown} is below the skill's floor {floor:.2f}"
        return Verdict.reject(EscalationReason.LOW_CONFIDENCE, why, confidence=conf)
    return verdict


def judge(
    skill: Skill,
    completion: Completion,
    values: dict[str, Any],
    *,
    dialect: Dialect,
    tools: ToolRegistry | None,
    floor: float | None = 0.0,
) -> Verdict:
    """Parse the completion, check it, and gate it on `floor` (the SLM's; 0 gates nothing)."""
    conf = confidence(skill, completion)
    parsed = _parse(skill, completion, dialect, tools)
    if not parsed.ok:
        parsed.confidence = conf
        return parsed
    errors = [e for check in skill.checks for e in check(parsed.answer, values)]
    if errors:
        return Verdict.reject(EscalationReason.CHECK_FAILED, *errors, confidence=conf)
    verdict = Verdict(ok=True, answer=parsed.answer, confidence=conf)
    return gate(verdict, conf, floor)


def kept_form(answer: Any) -> Any:
    """A checked answer as the cascade keeps it: JSON values (an object as a dict, tool calls with
    their results)."""
    if isinstance(answer, BaseModel):
        return answer.model_dump(mode="json")
    if isinstance(answer, list) and answer and isinstance(answer[0], ToolCall):
        return [{"name": c.name, "arguments": c.arguments, "result": _json_safe(c.result)} for c in answer]
    return answer


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def agreement(skill: Skill, greedy: Any, samples: list[Completion], values: dict[str, Any], *, dialect: Dialect,
              tools: ToolRegistry | None) -> float:  # fmt: skip
    """Self-consistency: the share of sampled answers that pass the same checks and equal the greedy
    answer (`greedy` as checked: a label, an object, or tool calls)."""
    key = answer_key(kept_form(greedy))
    agree = 0
    for sample in samples:
        judged = judge(skill, sample, values, dialect=dialect, tools=tools)
        agree += judged.ok and answer_key(kept_form(judged.answer)) == key
    return agree / len(samples)


def _parse(skill: Skill, completion: Completion, dialect: Dialect, tools: ToolRegistry | None) -> Verdict:
    output = skill.output
    if isinstance(output, ToolCalls):
        assert tools is not None
        return _parse_tool_calls(output, completion, tools)
    if completion.finish_reason == "length":
        return Verdict.reject(
            EscalationReason.INVALID_OUTPUT,
            f"the answer was cut off at {skill.token_budget} tokens",
        )
    text = (completion.text or "").strip()
    if isinstance(output, Label):
        return _parse_label(output, text, dialect)
    return _parse_object(output, text)


def _parse_label(output: Label, text: str, dialect: Dialect) -> Verdict:
    label = text
    if dialect == "openai" or text.startswith("{"):
        try:
            label = str(json.loads(text)["label"])
        except (json.JSONDecodeError, KeyError, TypeError):
            return Verdict.reject(
                EscalationReason.INVALID_OUTPUT, f"expected {{'label': ...}}, got {excerpt(text, 200)!r}"
            )
    if label not in output.labels:
        return Verdict.reject(
            EscalationReason.INVALID_OUTPUT,
            f"{excerpt(label, 100)!r} is not one of the labels: {', '.join(output.labels)}",
        )
    return Verdict(ok=True, answer=label)


def _parse_object(output: Object, text: str) -> Verdict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Verdict.reject(EscalationReason.INVALID_OUTPUT, f"not valid JSON ({exc.msg}): {excerpt(text, 200)!r}")
    try:
        answer = output.model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'object'}: {e['msg']}" for e in exc.errors()[:5]]
        return Verdict.reject(EscalationReason.INVALID_OUTPUT, *problems)
    if problems := output.enum_errors(answer):
        return Verdict.reject(EscalationReason.INVALID_OUTPUT, *problems)
    return Verdict(ok=True, answer=answer)


def _parse_tool_calls(output: ToolCalls, completion: Completion, tools: ToolRegistry) -> Verdict:
    raw = completion.tool_calls
    if completion.finish_reason == "length":
        # A call cut off mid-arguments is not parsed as a call: say so, not "got text".
        return Verdict.reject(EscalationReason.INVALID_OUTPUT,
                              f"the tool call was cut off at the token limit ({len(raw)} complete call(s) before "
                              "it): raise the skill's max_tokens")  # fmt: skip
    if not output.min_calls <= len(raw) <= output.max_calls:
        wanted = (
            f"exactly {output.min_calls}"
            if output.min_calls == output.max_calls
            else f"{output.min_calls} to {output.max_calls}"
        )
        got = f"{len(raw)} calls" if raw else f"text {excerpt(completion.text or '', 120)!r}"
        return Verdict.reject(EscalationReason.INVALID_OUTPUT, f"expected {wanted} tool call(s), got {got}")
    calls: list[ToolCall] = []
    for call in raw:
        try:
            if call.name not in output.tools:
                raise ToolNotGranted(
                    f"tool {call.name!r} is not granted to this skill (granted: {', '.join(output.tools)})",
                    tool=call.name,
                )
            calls.append(ToolCall(call.name, tools.get(call.name).validate(call.arguments)))
        except ToolError as exc:
            return Verdict.reject(EscalationReason.TOOL_ERROR, str(exc))
    return Verdict(ok=True, answer=calls)


def review_errors(skill: Skill, answer: Any, values: dict[str, Any], tools: ToolRegistry | None) -> list[str]:
    """What is wrong with a human reviewer's answer for `skill` (the same schema and checks)."""
    output = skill.output
    if isinstance(output, Label):
        if answer not in output.labels:
            return [f"{answer!r} is not one of the labels: {', '.join(output.labels)}"]
        parsed: Any = answer
    elif isinstance(output, Object):
        try:
            parsed = output.model.model_validate(answer)
        except ValidationError as exc:
            return [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]]
        if problems := output.enum_errors(parsed):
            return problems
    else:
        if not isinstance(answer, list) or not all(isinstance(c, dict) and "name" in c for c in answer):
            return ["expected a list of tool calls: [{'name': ..., 'arguments': {...}, 'result': ...}]"]
        try:
            for call in answer:
                if call["name"] not in output.tools:
                    return [f"tool {call['name']!r} is not granted to this step ({', '.join(output.tools)})"]
                assert tools is not None
                tools.get(call["name"]).validate(call.get("arguments", {}))
        except ToolError as exc:
            return [str(exc)]
        return []  # a reviewer's calls are taken as done: their results are theirs to give
    return [e for check in skill.checks for e in check(parsed, values)]


def approval_errors(skill: Skill, calls: list[dict[str, Any]], values: Mapping[str, Any],
                    tools: ToolRegistry | None) -> list[str]:  # fmt: skip
    """What is wrong with a reviewer's edited calls: the same count, grants, arguments (narrowed
    schemas) and domain checks a model's answer meets."""
    output = skill.output
    if not isinstance(output, ToolCalls) or tools is None:
        return [f"step {skill.name!r} does not call tools"]
    if not output.min_calls <= len(calls) <= output.max_calls:
        return [f"expected {output.min_calls} to {output.max_calls} call(s), got {len(calls)}"]
    parsed: list[ToolCall] = []
    for call in calls:
        if call["name"] not in output.tools:
            return [f"tool {call['name']!r} is not granted to this step ({', '.join(output.tools)})"]
        try:
            parsed.append(ToolCall(call["name"], tools.get(call["name"]).validate(call.get("arguments", {}))))
        except ToolError as exc:
            return [str(exc)]
    return [e for check in skill.checks for e in check(parsed, values)]
