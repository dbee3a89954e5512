"""The boundary: one validator for a job's input, the same in the SDK and in the worker.

A graph's input is checked against the JSON Schema its workers publish in the catalog (pydantic's
`model_json_schema()` of the graph's input model) with JSON Schema Draft 2020-12, where every
keyword whose meaning differs between `jsonschema` and pydantic takes pydantic's meaning:

- `pattern` (and `patternProperties`) match with pydantic-core's own regex engine (Rust `regex`):
  `$` matches only at the very end (Python `re` also matches before a final newline), `\\w`, `\\s`
  and `\\b` follow Unicode the way pydantic does, `\\p{L}` and `[[:alpha:]]` work. A pattern Rust
  cannot compile (look-around, back-references) can only come from a model configured with
  `regex_engine="python-re"`, so it is matched with Python `re`, as pydantic then does.
- `format` is checked (jsonschema ignores it by default) by the pydantic type that emits it:
  `date-time` by `datetime`, `email` by `EmailStr`, `uuid` by `UUID`, `uri` by `AnyUrl`, ...
- `integer` accepts an integral float only within 64 bits (pydantic refuses `1e19` for `int`);
  `number` accepts an integer only if it converts to a finite float (pydantic refuses `10**400`).
- `minLength`/`maxLength` of `format: binary` (a `bytes` field) count UTF-8 bytes, as pydantic does.
- `contentMediaType: application/json` (a `Json` field) needs a JSON text.

Before the schema, the value itself must be JSON (`json_value`): objects with string keys,
arrays, strings UTF-8 can carry (no lone surrogates), finite numbers, true, false, null, nested at
most `MAX_DEPTH` deep. The worker runs this same validator before pydantic, so whatever the SDK
accepts the worker accepts too; what only pydantic refuses (a custom validator, a strict field)
fails as a typed `InvalidInput` on the worker before any step runs.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticError
from pydantic_core import SchemaError, SchemaValidator, core_schema

from slmflow.errors import InputTooLarge, InvalidInput, ProjectError
from slmflow.redaction import excerpt, redact

if TYPE_CHECKING:
    from jsonschema import ValidationError as SchemaViolation

__all__ = [
    "MAX_DEPTH",
    "RESERVED_CONFIG",
    "Problem",
    "check_key",
    "check_size",
    "encoded_size",
    "first_problem",
    "job_config",
    "json_object",
    "json_value",
    "shown",
    "validate",
]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays in an input or metadata (pydantic's JSON reader stops
near 200, and a job record wraps its input)."""

_SHOWN_CHARS = 40
_INT64 = 2**63
_BANNED_KEY_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # controls, format, surrogates, separators


# -- what a JSON value is -------------------------------------------------------------------------


def shown(value: Any) -> str:
    """A short, redacted rendering of `value` for an error message (never a whole 1 MB string)."""
    if isinstance(value, Mapping):
        return f"an object of {len(value)} field(s)"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)} item(s)"
    if isinstance(value, int) and value.bit_length() > 4000:  # Python refuses to write it in decimal
        return f"a {value.bit_length()}-bit integer"
    head = value[: _SHOWN_CHARS * 8] if isinstance(value, str) else value
    text = redact(repr(head)[: _SHOWN_CHARS * 8])  # redacted before it is cut: a cut email escapes
    whole = head is value and len(text) <= _SHOWN_CHARS
    return text if whole else text[:_SHOWN_CHARS] + "…"


def _bad(field: str, problem: str) -> InvalidInput:
    if len(field) > 200:  # a deep path: its start and its end
        field = f"{field[:80]}…{field[-100:]}"
    return InvalidInput(f"{field}: {problem}", field=field)


def json_value(value: Any, field: str, depth: int = 0) -> Any:
    """`value` as plain JSON (dicts, lists, str, int, float, bool, None), or `InvalidInput` naming where not.

    Tuples become lists and str/int subclasses (enums) plain values, as `json.dumps` writes them.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _json_string(value, field)
    if isinstance(value, int):
        return _json_int(value, field)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(field, f"{value!r} is not a JSON number (JSON has no NaN or Infinity): send null or a string")
        return float(value)
    if isinstance(value, Mapping | list | tuple):
        if depth >= MAX_DEPTH:
            raise _bad(field, f"nested deeper than {MAX_DEPTH} objects/arrays (or it contains itself): flatten it")
        if isinstance(value, Mapping):
            return {_json_key(k, field): json_value(v, f"{field}.{_key_shown(k)}", depth + 1) for k, v in value.items()}
        return [json_value(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _bad(
        field,
        f"a {type(value).__name__} is not a JSON value (expected an object, array, string, number, true, false "
        "or null): convert it first, e.g. a datetime with .isoformat(), bytes with base64, a set with list()",
    )


def _json_string(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        point = ord(value[exc.start])
        raise _bad(
            field, f"holds a lone surrogate U+{point:04X} at character {exc.start}, which UTF-8 cannot carry: "
            "decode text with errors='replace' or pair the surrogates"
        ) from None  # fmt: skip
    return str.__str__(value)


def _json_int(value: int, field: str) -> int:
    if value.bit_length() > 4000:  # about 1,200 digits; Python refuses to write more than 4,300
        raise _bad(field, f"a {value.bit_length()}-bit integer is too large to send: send it as a string")
    return int(value)


def _json_key(key: Any, field: str) -> str:
    if not isinstance(key, str):
        raise _bad(f"{field}.{_key_shown(key)}", f"object keys must be strings, not {type(key).__name__}: "
                   "JSON would turn it into a string silently (and two keys into one)")  # fmt: skip
    return _json_string(key, f"{field}.{_key_shown(key)}")


def _key_shown(key: Any) -> str:
    text = key if isinstance(key, str) and key.isidentifier() else repr(key)
    return excerpt(text, _SHOWN_CHARS)


def json_object(value: Any, field: str) -> dict[str, Any]:
    """`value` as a plain JSON object, or `InvalidInput` (it must be a mapping of JSON values)."""
    if not isinstance(value, Mapping):
        raise _bad(field, f"expected a JSON object (a dict), got {type(value).__name__} {shown(value)}")
    result: dict[str, Any] = json_value(value, field)
    return result


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON (how the job record stores it)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return len(text.encode("utf-8"))


def check_size(value: Any, field: str, limit: int, setting: str) -> None:
    """`InputTooLarge` naming the setting when `value`'s JSON is over `limit` bytes."""
    size = encoded_size(value)
    if size > limit:
        raise InputTooLarge(
            f"{field} is {size:,} bytes as UTF-8 JSON, over {setting}={limit:,}: pass large data by reference "
            f"(a URL or an id the graph fetches), or raise {setting}",
            field=field, setting=setting, limit=limit, size=size,
        )  # fmt: skip


def check_key(key: Any, max_chars: int) -> str | None:
    """A usable idempotency key (or None), else a typed error: a str of 1 to `max_chars` printable characters."""
    if key is None:
        return None
    fix = f"pass a str of 1 to {max_chars} characters without control characters, e.g. an order id or a UUID"
    if not isinstance(key, str):
        raise InvalidInput(f"idempotency_key must be a str, not {type(key).__name__} {shown(key)}: {fix}",
                           field="idempotency_key")  # fmt: skip
    if not key:
        raise InvalidInput(f"idempotency_key is empty: {fix}, or None for no key", field="idempotency_key")
    if len(key) > max_chars:
        raise InputTooLarge(
            f"idempotency_key is {len(key):,} characters, over SLMFLOW_MAX_KEY_CHARS={max_chars}: {fix} "
            "(hash a longer one, e.g. hashlib.sha256(...).hexdigest())",
            field="idempotency_key", setting="SLMFLOW_MAX_KEY_CHARS", limit=max_chars, size=len(key),
        )  # fmt: skip
    for index, char in enumerate(key):
        if unicodedata.category(char) in _BANNED_KEY_CATEGORIES:
            raise InvalidInput(f"idempotency_key {shown(key)} holds the control character U+{ord(char):04X} at "
                               f"{index}: {fix}", field="idempotency_key")  # fmt: skip
    return str.__str__(key)


# -- the schema, with pydantic's meaning ----------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a string matches `pattern` anywhere, as pydantic decides it."""
    try:
        rust = SchemaValidator(core_schema.str_schema(pattern=pattern))
    except SchemaError:
        compiled = re.compile(pattern)  # only a `regex_engine="python-re"` model can carry this pattern
        return lambda text: compiled.search(text) is not None

    def matches(text: str) -> bool:
        try:
            rust.validate_python(text, strict=True)
        except PydanticError:
            return False
        return True

    return matches


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaViolation]:
    if validator.is_type(instance, "string") and not _matcher(pattern)(instance):
        yield _violation(f"must match the pattern {pattern!r}, got {shown(instance)}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _matcher(pattern)(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _length(instance: str, schema: Mapping[str, Any]) -> tuple[int, str]:
    if schema.get("format") == "binary":  # a bytes field: pydantic counts the UTF-8 bytes of a str
        return len(instance.encode("utf-8", "surrogatepass")), "bytes"
    return len(instance), "characters"


def _min_length(validator: Any, limit: int, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaViolation]:
    if validator.is_type(instance, "string"):
        size, unit = _length(instance, schema)
        if size < limit:
            yield _violation(f"must be at least {limit} {unit} long, got {size}: {shown(instance)}")


def _max_length(validator: Any, limit: int, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaViolation]:
    if validator.is_type(instance, "string"):
        size, unit = _length(instance, schema)
        if size > limit:
            yield _violation(f"must be at most {limit} {unit} long, got {size:,}: {shown(instance)}")


@functools.cache
def _format_types() -> dict[str, Any]:
    """The pydantic type behind each `format` pydantic emits (checkable without the worker's files)."""
    import datetime as dt
    import ipaddress
    from pathlib import Path
    from re import Pattern

    from pydantic import AnyUrl, IPvAnyAddress, IPvAnyInterface, IPvAnyNetwork, types
    from pydantic_core import MultiHostUrl

    found: dict[str, Any] = {
        "date-time": dt.datetime, "date": dt.date, "time": dt.time, "duration": dt.timedelta, "uuid": uuid.UUID,
        "uri": AnyUrl, "multi-host-uri": MultiHostUrl, "ipv4": ipaddress.IPv4Address,
        "ipv6": ipaddress.IPv6Address, "ipvanyaddress": IPvAnyAddress, "ipv4network": ipaddress.IPv4Network,
        "ipv6network": ipaddress.IPv6Network, "ipvanynetwork": IPvAnyNetwork,
        "ipv4interface": ipaddress.IPv4Interface, "ipv6interface": ipaddress.IPv6Interface,
        "ipvanyinterface": IPvAnyInterface, "base64": types.Base64Bytes, "base64url": types.Base64UrlBytes,
        "path": Path, "regex": Pattern[str],
    }  # fmt: skip
    found |= {f"uuid{n}": getattr(types, f"UUID{n}") for n in range(1, 9) if hasattr(types, f"UUID{n}")}
    try:  # EmailStr needs the `email-validator` package; a worker with an email field has it
        from pydantic import EmailStr, NameEmail

        TypeAdapter(EmailStr)
        found |= {"email": EmailStr, "name-email": NameEmail}
    except ImportError:
        pass
    return found


@functools.cache
def _format_checker(name: str) -> Callable[[str], str | None] | None:
    """A check for format `name`: None if the string passes, else pydantic's reason. None: not checked."""
    kind = _format_types().get(name)
    if kind is None:
        return None  # an annotation (`binary`, `password`) or a check only the worker's filesystem can make
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def check(text: str) -> str | None:
        try:
            adapter.validate_python(text)
        except PydanticError as exc:
            return str(exc.errors()[0]["msg"])
        return None

    return check


def _format(validator: Any, name: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[SchemaViolation]:
    if not validator.is_type(instance, "string"):
        return
    check = _format_checker(name)
    reason = check(instance) if check is not None else None
    if reason is not None:
        yield _violation(f"must be a valid {name} ({excerpt(reason, 120)}), got {shown(instance)}")


def _content_media_type(
    validator: Any, media: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    if media != "application/json" or not validator.is_type(instance, "string"):
        return
    try:
        decoded = json.loads(instance)
    except ValueError:
        yield _violation(f"must be a JSON text, got {shown(instance)}")
        return
    if isinstance(schema.get("contentSchema"), dict):
        yield from validator.descend(decoded, schema["contentSchema"])


def _is_integer(checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        return True
    return isinstance(instance, float) and instance.is_integer() and -_INT64 < instance < _INT64


def _is_number(checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        try:
            float(instance)
        except OverflowError:  # pydantic's float refuses it
            return False
        return True
    return isinstance(instance, float)


def _violation(message: str) -> SchemaViolation:
    from jsonschema import ValidationError  # jsonschema loads at the first validation, not at import

    return ValidationError(message)


@functools.cache
def _validator_class() -> Any:
    import jsonschema

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(
        base,
        validators={
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "minLength": _min_length,
            "maxLength": _max_length,
            "format": _format,
            "contentMediaType": _content_media_type,
        },
        type_checker=base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}),
    )


@functools.lru_cache(maxsize=128)
def _validator_for(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    # The meta-schema's own `format: regex` would judge patterns by Python `re`: check it without formats.
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    error = jsonschema.exceptions.best_match(meta.iter_errors(schema))
    if error is not None:
        raise jsonschema.exceptions.SchemaError.create_from(error)
    return _validator_class()(schema)


# -- problems and messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with an input: where (`input.extra.note`) and what."""

    field: str
    message: str


def first_problem(schema: Mapping[str, Any], data: Any, root: str = "input") -> Problem | None:
    """What is wrong with JSON value `data` under `schema` (the most relevant error), or None."""
    import jsonschema
    import referencing.exceptions

    try:
        validator = _validator_for(json.dumps(schema, sort_keys=True))
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    except (
        jsonschema.exceptions.SchemaError,
        jsonschema.exceptions.UnknownType,
        re.error,
        referencing.exceptions.Unresolvable,
    ) as exc:
        raise ProjectError(f"the graph's input schema cannot be used: {excerpt(str(exc), 200)}: publish the "
                           "schema of a pydantic model (model_json_schema())") from None  # fmt: skip
    if error is None:
        return None
    return _problem(error, root)


def _where(root: str, path: Any) -> str:
    where = root
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else f".{_key_shown(part)}"
    return where


def _problem(error: SchemaViolation, root: str) -> Problem:
    where, keyword, expected, instance = (
        _where(root, error.absolute_path),
        error.validator,
        error.validator_value,
        error.instance,
    )
    if keyword == "required":
        missing = next((name for name in expected if name not in instance), expected[0])
        return Problem(f"{where}.{_key_shown(missing)}", "Field required")
    if keyword == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        extra = [k for k in instance if k not in known]
        return Problem(where, f"has unexpected field(s) {', '.join(_key_shown(k) for k in extra[:5])}")
    return Problem(where, _what(keyword, expected, instance, error.message))


def _json_type(instance: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _validator_class().TYPE_CHECKER.is_type(instance, name):
            return name
    return type(instance).__name__


def _what(keyword: Any, expected: Any, instance: Any, message: str) -> str:
    if keyword == "type":
        names = " or ".join(expected) if isinstance(expected, list) else expected
        if isinstance(instance, float) and "integer" in names and instance.is_integer():
            return f"expected {names} (a float only if whole and within 64 bits), got {shown(instance)}"
        if isinstance(instance, int) and not isinstance(instance, bool) and "number" in names:
            return f"expected {names} (this integer is too large for a float), got {instance.bit_length()} bits"
        return f"expected {names}, got {_json_type(instance)} {shown(instance)}"
    simple = {
        "minimum": "must be >= {}", "maximum": "must be <= {}", "exclusiveMinimum": "must be > {}",
        "exclusiveMaximum": "must be < {}", "multipleOf": "must be a multiple of {}",
        "minItems": "must have at least {} item(s)", "maxItems": "must have at most {} item(s)",
        "minProperties": "must have at least {} field(s)", "maxProperties": "must have at most {} field(s)",
        "const": "must be {}",
    }  # fmt: skip
    if keyword in simple:
        return f"{simple[keyword].format(excerpt(json.dumps(expected), 80))}, got {shown(instance)}"
    if keyword == "enum":
        return f"must be one of {excerpt(', '.join(json.dumps(e) for e in expected), 160)}, got {shown(instance)}"
    if keyword == "uniqueItems":
        return "must not repeat an item"
    if keyword in ("anyOf", "oneOf"):
        return f"matches none of the shapes allowed here ({keyword}), got {shown(instance)}"
    if keyword in ("pattern", "minLength", "maxLength", "format", "contentMediaType"):
        return message  # ours: already short and redacted
    return f"fails the schema's {keyword!r} rule, got {shown(instance)}"


def validate(schema: Mapping[str, Any], data: Any, *, graph: str, root: str = "input") -> None:
    """`InvalidInput` naming the first bad field of JSON value `data` under a graph's input schema."""
    problem = first_problem(schema, data, root)
    if problem is not None:
        raise InvalidInput(f"input for graph {graph!r} is invalid: {problem.field}: {problem.message}",
                           graph=graph, field=problem.field)  # fmt: skip


RESERVED_CONFIG = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns"})


def job_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The job's own values, or `InvalidInput` for a key LangGraph reserves."""
    values = dict(config or {})
    for key in values:
        if not isinstance(key, str) or key in RESERVED_CONFIG or key.startswith(("__", "checkpoint_")):
            raise InvalidInput(f"config key {key!r} is reserved (thread_id is the job id; __* and checkpoint_* are "
                               "LangGraph's): rename it", field="config")  # fmt: skip
    return values
