"""Who answered, and the forms of an answer the engine compares.

An answer is *written* by a model (`said`: a label, a parsed object, or tool calls with parsed
arguments) and *kept* by the cascade (`SkillResult.answer`); `answer_key` makes either form
comparable (tool calls by name and arguments, never their results). `input_hash` names an input:
the identity of a training, calibration or audit example.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Judged", "Tier", "answer_key", "input_hash", "said"]


class Tier(StrEnum):
    """Who answered: the small model, the large one, or a human reviewer."""

    SLM = "slm"
    LLM = "llm"
    HUMAN = "human"


@dataclass(frozen=True)
class Judged:
    """One model's first answer to an input as judged: whether it passed, the answer (kept form when
    it passed, as written otherwise), and its confidence by the skill's signal."""

    passed: bool
    answer: Any
    confidence: float | None = None


def input_hash(values: Mapping[str, Any]) -> str:
    """Hash of a skill's input (before redaction): the identity of an example."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def answer_key(answer: Any) -> str:
    """A comparable form of an answer: tool calls by name and arguments only, never their results."""
    if isinstance(answer, list):
        answer = [
            {"name": c.get("name"), "arguments": c.get("arguments")} if isinstance(c, dict) else c for c in answer
        ]
    return json.dumps(answer, sort_keys=True, default=str)


def said(output: Any) -> Any:
    """What a model wrote (an attempt's `output`) in comparable form: a label, a parsed object, or
    tool calls with parsed arguments; None when it wrote nothing."""
    if isinstance(output, list):
        return [{"name": c.get("name"), "arguments": _parsed(c.get("arguments") or "{}")} for c in output]
    if isinstance(output, str):
        text = output.strip()
        return (_parsed(text) if text.startswith("{") else text) or None
    return output


def _parsed(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text
