"""Redaction: what never leaves a process in clear text (spans, the dataset store, errors, logs).

The default hook replaces email addresses and payment card numbers. A project with other personal
data passes its own `Redactor` (a `str -> str`) where redaction happens. `mask_url` hides the
password of a connection URL (Redis, Postgres, HTTP) wherever one reaches an error or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Redactor", "excerpt", "mask_url", "redact", "redact_value"]

Redactor = Callable[[str], str]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# scheme://user:password@ - the password runs to the token's last `@` (an unencoded `@` or `/` in it
# is masked too); a token ends at whitespace or a quote, so a URL inside a repr or a sentence works.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>:@/]*):(?P<password>[^\s'\"<>]*)@")
# ...?password=secret&... in a query string (libpq and redis-py both read it).
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<password>[^&#\s'\"<>]*)", re.IGNORECASE)
MASK = "***"


def redact(text: str) -> str:
    """The default hook: email addresses become `[email]`, card numbers `[card]`."""
    return _CARD.sub("[card]", _EMAIL.sub("[email]", text))


def excerpt(text: str, limit: int) -> str:
    """The start of `text` for an error message, redacted before it is cut (a cut email escapes)."""
    return redact(text)[:limit]


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (a URL or free text).

    `redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`, `redis://:secret@host`
    becomes `redis://:***@host`, and `postgresql://host/db?password=secret` hides its query password.
    """
    masked = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", masked)


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
