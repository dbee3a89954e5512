"""Grading rules for each step of support_triage: when is a step's answer right for a ticket?

`expected` is a row of `examples/support_triage/expected.jsonl` (the ticket's intent and fields);
`values` is the step's input. A benchmark or an eval uses these to score the kept answers of each
step, so that "succeeded" can be checked for being right, not only for passing the step's checks.

- classify_intent: the expected intent.
- extract_fields: the expected order id, amount and email (null where the ticket gives none).
- lookup_order: one call of `lookup_order` with the expected order id.
- resolve: one call of the tool the intent calls for (`check_refund_eligibility` for money-back
  intents, `open_case` for the rest) with the expected order id; a case's summary is free text.
- draft_reply: the reply passes the reply's verifiers (it cites the order, mentions no one else's
  data, agrees with the resolution and ends with a full sentence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agents.support_triage import REFUND_INTENTS, Reply, reply_agrees_with_resolution, reply_is_safe

__all__ = ["GRADERS", "expected_tool", "grade"]

Grader = Callable[[Any, Mapping[str, Any], Mapping[str, Any]], bool]


def expected_tool(intent: str) -> str:
    """The tool `resolve` must call for a ticket of this intent."""
    return "check_refund_eligibility" if intent in REFUND_INTENTS else "open_case"


def _one_call(answer: Any, name: str, order_id: str | None) -> bool:
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], Mapping):
        return False
    call = answer[0]
    return bool(call.get("name") == name and (call.get("arguments") or {}).get("order_id") == order_id)


def _fields(answer: Any, expected: Mapping[str, Any]) -> bool:
    if not isinstance(answer, Mapping):
        return False
    for key, want in expected["fields"].items():
        got = answer.get(key)
        if isinstance(want, int | float) and isinstance(got, int | float):
            if abs(float(want) - float(got)) > 1e-6:
                return False
        elif got != want:
            return False
    return True


def _reply(answer: Any, values: Mapping[str, Any]) -> bool:
    if not isinstance(answer, Mapping) or not isinstance(answer.get("reply"), str):
        return False
    reply = Reply(reply=answer["reply"][:240])
    return not [*reply_is_safe(reply, values), *reply_agrees_with_resolution(reply, values)]


GRADERS: dict[str, Grader] = {
    "classify_intent": lambda answer, expected, values: answer == expected["intent"],
    "extract_fields": lambda answer, expected, values: _fields(answer, expected),
    "lookup_order": lambda answer, expected, values: _one_call(answer, "lookup_order", expected["fields"]["order_id"]),
    "resolve": lambda answer, expected, values: _one_call(
        answer, expected_tool(expected["intent"]), expected["fields"]["order_id"]
    ),
    "draft_reply": lambda answer, expected, values: _reply(answer, values),
}
"""Step name to its grading rule `(answer, expected, values) -> right`."""


def grade(step: str, answer: Any, expected: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether `answer` (the kept form: a label, an object as a dict, tool calls as dicts) is right."""
    return GRADERS[step](answer, expected, values)
