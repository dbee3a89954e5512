"""Redaction: what never leaves a process in clear text (spans, the dataset store).

The default hook replaces email addresses and payment card numbers. A project with other personal
data passes its own `Redactor` (a `str -> str`) where redaction happens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Redactor", "excerpt", "redact", "redact_value"]

Redactor = Callable[[str], str]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def redact(text: str) -> str:
    """The default hook: email addresses become `[email]`, card numbers `[card]`."""
    return _CARD.sub("[card]", _EMAIL.sub("[email]", text))


def excerpt(text: str, limit: int) -> str:
    """The start of `text` for an error message, redacted before it is cut (a cut email escapes)."""
    return redact(text)[:limit]


def redact_value(value: Any, redactor: Redactor = redact) -> Any:
    """`value` with every string inside it (keys included) redacted, and numbers that redact too."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
        return value if redactor(text) == text else redactor(text)
    if isinstance(value, dict):
        return {redactor(str(k)): redact_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, redactor) for v in value]
    return value
