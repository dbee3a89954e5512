"""The messages a skill sends: its instructions, what the answer must look like, and feedback.

Tools are not rendered here: they go in the request's `tools` field, and the local server's chat
template (`templates/smollm2_tools.jinja`) lists them to the model, since SmolLM2's own drops them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from slmflow.skills import Label, Object, Skill
from slmflow.tools import ToolRegistry

__all__ = ["feedback_message", "render_messages"]


def _answer_format(skill: Skill) -> str:
    output = skill.output
    if isinstance(output, Label):
        return "Answer with exactly one of these labels and nothing else: " + ", ".join(output.labels)
    if isinstance(output, Object):
        schema = json.dumps(output.model.model_json_schema(), separators=(",", ":"))
        return f"Answer with one JSON object that matches this JSON Schema: {schema}"
    return "Answer by calling the right function with arguments taken from the request."


def render_messages(skill: Skill, values: Mapping[str, Any], tools: ToolRegistry | None = None) -> list[dict[str, Any]]:
    """System and user messages for one input."""
    system = f"{skill.instructions.strip()}\n\n{_answer_format(skill)}"
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": skill.render_prompt(values)},
    ]


def feedback_message(previous: Any, errors: list[str]) -> dict[str, Any]:
    """A user turn that shows the rejected answer and why, for the next attempt."""
    shown = previous if isinstance(previous, str) else json.dumps(previous)
    problems = "\n".join(f"- {e}" for e in errors)
    return {
        "role": "user",
        "content": (
            f"Your previous answer was rejected.\nAnswer: {shown}\nProblems:\n{problems}\n"
            "Answer again and fix these problems."
        ),
    }
