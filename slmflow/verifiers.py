"""Checks anyone can switch on: `Skill(checks=(grounded(),))`.

`grounded` is the reference project's "every extracted value must be quoted in the ticket" made
generic: every chosen string value of an object answer (or of a tool call's arguments) must occur
in the skill's input, compared after normalising case, spacing and punctuation; every number must
be a number the input states, however it is written (`$1,068.00`, `1.068,00 €`, `39,95`). An
invented value is worse than none: the check tells the model to use null instead.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from slmflow.skills import Check

__all__ = ["grounded", "normalise", "numbers_in"]

# Digits grouped in thousands (by , . ' or a space) with an optional decimal part, or plain digits
# with one: `1,068.00`, `1.249,00`, `1 200,50`, `59.90`, `39,95`, `12`.
_NUMBER = re.compile(r"\d{1,3}(?:[ \u00a0'.,]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?")


def normalise(text: str) -> str:
    """Case-folded, accents kept, punctuation dropped, spacing collapsed: what 'occurs' compares."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch if ch.isalnum() or ch in "@" else " " for ch in text)
    return " ".join(text.split())


def numbers_in(text: str) -> set[float]:
    """Every number the text states, read both ways where the separators are ambiguous
    (`1.249` may be 1249 or 1.249; `39,95` is 39.95; `1,068.00` is 1068.0)."""
    found: set[float] = set()
    for match in _NUMBER.finditer(text):
        raw = match.group().replace(" ", "").replace("\u00a0", "").replace("'", "").rstrip(".,")
        found.update(_readings(raw))
    return found


def _readings(raw: str) -> set[float]:
    readings: set[float] = set()
    digits = raw.replace(",", "").replace(".", "")
    if digits.isdigit():
        readings.add(float(digits))  # every separator a thousands separator
    for decimal in (",", "."):
        if decimal in raw:
            whole, _, fraction = raw.rpartition(decimal)
            whole = whole.replace(",", "").replace(".", "")
            if whole.isdigit() and fraction.isdigit():
                readings.add(float(f"{whole}.{fraction}"))
    return readings


def _values(answer: Any, fields: tuple[str, ...]) -> Iterable[tuple[str, Any]]:
    if isinstance(answer, BaseModel):
        data = answer.model_dump()
        yield from ((k, v) for k, v in data.items() if not fields or k in fields)
    elif isinstance(answer, list):  # tool calls
        for call in answer:
            arguments = getattr(call, "arguments", None) or {}
            yield from ((f"{call.name}.{k}", v) for k, v in arguments.items() if not fields or k in fields)


def grounded(*fields: str, source: str | None = None) -> Check:
    """A check: the answer's string and number values (these `fields`, or all) occur in the input
    (its `source` field, or every string field of the input together)."""

    def check(answer: Any, values: Mapping[str, Any]) -> Iterable[str]:
        text = str(values[source]) if source else " ".join(str(v) for v in values.values() if isinstance(v, str))
        haystack = f" {normalise(text)} "
        where = f"the {source}" if source else "the input"
        numbers: set[float] | None = None
        for name, value in _values(answer, fields):
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                numbers = numbers_in(text) if numbers is None else numbers
                if not any(abs(n - float(value)) < 0.005 for n in numbers):
                    yield f"{name} {value} does not occur in {where}; use null if there is none"
            elif isinstance(value, str) and value.strip() and f" {normalise(value)} " not in haystack:
                yield f"{name} {value!r} does not occur in {where}; use null if there is none"

    check.__name__ = f"grounded({', '.join(fields) or 'all'})"
    return check
