"""The boundary: one validator, pydantic's meaning, typed submit errors that write nothing, masked passwords."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, EmailStr, Field, field_validator

from slmflow import AsyncClient, GraphSpec, JobState, ToolRegistry
from slmflow.errors import (
    EndpointUnreachable,
    InputTooLarge,
    InvalidInput,
    ProjectError,
    SettingsError,
    UnknownGraph,
)
from slmflow.jobs import validate_input
from slmflow.redaction import mask_url
from slmflow.settings import load_settings
from slmflow.validation import MAX_DEPTH, check_key, json_value, validate

TAG = r"^[a-z0-9]{6,40}$"


class Ticket(BaseModel):
    tag: str = Field(pattern=TAG)
    title: str = Field(default="t", min_length=1, max_length=5)
    count: int = 0
    ratio: float = 0.0
    raw: bytes = Field(default=b"", max_length=4)
    email: EmailStr | None = None
    when: dt.datetime | None = None
    ident: uuid.UUID | None = None

    @field_validator("title")
    @classmethod
    def _no_shouting(cls, value: str) -> str:
        if value.isupper():
            raise ValueError("no shouting")
        return value


SCHEMA = Ticket.model_json_schema()


async def _echo(state: JobState) -> dict[str, Any]:
    return {"output": {}}


builder = StateGraph(JobState)
builder.add_node("echo", _echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
SPEC = GraphSpec(name="tickets", builder=builder, input=Ticket, output=Ticket, tools=ToolRegistry.of([]))


def refusal(data: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate(SCHEMA, json_value(data, "input"), graph="tickets")
    return caught.value


def accepts(data: dict[str, Any]) -> bool:
    try:
        validate(SCHEMA, data, graph="tickets")
    except InvalidInput:
        return False
    return True


# -- one validator, both sides --------------------------------------------------------------------


def test_a_dollar_before_a_final_newline_is_refused_by_the_sdk_and_the_worker() -> None:
    bad = {"tag": "abcdef\n"}
    sdk = refusal(bad)
    assert sdk.context["field"] == "input.tag" and "pattern" in sdk.message and "'abcdef\\n'" in sdk.message
    with pytest.raises(InvalidInput) as worker:
        validate_input(SPEC, bad)
    assert worker.value.context["field"] == "input.tag"
    assert accepts({"tag": "abcdef"}) and validate_input(SPEC, {"tag": "abcdef"})


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"^\w+$", "e\u0301", True),  # Rust's \w has combining marks; Python's does not
        (r"^\s*$", "\x1c", False),  # Python's \s has the information separators; Rust's does not
        (r"^\p{L}+$", "straße", True),  # Unicode classes: a Python `re` error
        (r"^[[:alpha:]]+$", "abc", True),  # POSIX classes
        (r"^[$]+$", "$$", True),
        (r"^a\$$", "a$\n", False),
    ],
)
def test_patterns_mean_what_pydantic_means(pattern: str, text: str, expected: bool) -> None:
    class Model(BaseModel):
        value: str = Field(pattern=pattern)

    assert accepts_model(Model, text) is expected
    try:
        validate(Model.model_json_schema(), {"value": text}, graph="g")
    except InvalidInput:
        assert not expected
    else:
        assert expected


def accepts_model(model: type[BaseModel], text: str) -> bool:
    try:
        model.model_validate({"value": text})
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ({"count": 1.0}, True),  # an integral float is an int for both
        ({"count": 1e19}, False),  # jsonschema: an integer; pydantic: too big for an int from a float
        ({"count": 2**80}, True),  # a big int is fine
        ({"ratio": 10**400}, False),  # pydantic's float refuses it, jsonschema's number took it
        ({"ratio": 10**30}, True),
        ({"raw": "éé"}, True),  # 2 characters, 4 UTF-8 bytes: at the limit
        ({"raw": "ééé"}, False),  # bytes count UTF-8 bytes in pydantic (6 > 4), jsonschema counted 3
        ({"raw": "abcd"}, True),
        ({"title": "😀😀😀😀😀"}, True),  # lengths are code points on both sides
        ({"title": "😀😀😀😀😀😀"}, False),
        ({"email": "not-an-email"}, False),  # formats are checked as pydantic checks them
        ({"email": "maria@example.com"}, True),
        ({"when": "yesterday"}, False),
        ({"when": "2024-05-01T10:00:00Z"}, True),
        ({"ident": "1234"}, False),
        ({"ident": str(uuid.UUID(int=7))}, True),
    ],
)
def test_what_the_sdk_accepts_the_worker_accepts(data: dict[str, Any], ok: bool) -> None:
    data = {"tag": "abcdef", **data}
    assert accepts(data) is ok
    if ok:
        validate_input(SPEC, data)
    else:
        with pytest.raises(InvalidInput):
            validate_input(SPEC, data)


def test_an_input_only_pydantic_refuses_is_a_typed_error_naming_the_field() -> None:
    data = {"tag": "abcdef", "title": "LOUD"}
    assert accepts(data)  # a custom validator is not in the schema
    with pytest.raises(InvalidInput) as caught:
        validate_input(SPEC, data)
    assert caught.value.context == {"graph": "tickets", "field": "input.title"}
    assert "no shouting" in caught.value.message


def test_messages_excerpt_and_redact_the_value() -> None:
    huge = refusal({"tag": "x" * 1_000_000})
    assert len(huge.message) < 300 and "…" in huge.message
    email = refusal({"tag": "maria.lopez@example.com"})
    assert "maria.lopez@example.com" not in email.message and "[email]" in email.message


def test_a_broken_schema_is_a_project_error() -> None:
    with pytest.raises(ProjectError):
        validate({"type": "object", "properties": {"x": {"type": 5}}}, {"x": 1}, graph="g")


# -- what a JSON value is -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "says"),
    [
        ({"a": {1, 2}}, "input.a", "a set is not a JSON value"),
        ({"a": b"x"}, "input.a", "bytes"),
        ({"a": dt.datetime(2024, 1, 1)}, "input.a", "isoformat"),
        ({"a": [1, math.nan]}, "input.a[1]", "NaN"),
        ({"a": math.inf}, "input.a", "Infinity"),
        ({"a": "ok\ud800"}, "input.a", "lone surrogate U+D800"),
        ({1: "x"}, "input.1", "keys must be strings"),
        ({"a": 10**5000}, "input.a", "too large"),
    ],
)
def test_values_that_are_not_json_are_refused_naming_where(value: Any, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        json_value(value, "input")
    assert caught.value.context["field"] == field and says in caught.value.message


def test_nesting_is_bounded_and_a_cycle_is_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested deeper"):
        json_value({"a": deep}, "input")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(InvalidInput, match="contains itself"):
        json_value(cycle, "input")


def test_tuples_become_lists_and_enums_plain_values() -> None:
    import enum

    class Colour(enum.StrEnum):
        RED = "red"

    plain = json_value({"t": (1, 2), "c": Colour.RED}, "input")
    assert plain == {"t": [1, 2], "c": "red"} and type(plain["c"]) is str and type(plain["t"]) is list


@pytest.mark.parametrize(
    ("key", "error", "says"),
    [
        (42, InvalidInput, "must be a str, not int"),
        ("", InvalidInput, "is empty"),
        ("k" * 257, InputTooLarge, "SLMFLOW_MAX_KEY_CHARS=256"),
        ("order\n1", InvalidInput, "U+000A"),
        ("\u202eevil", InvalidInput, "U+202E"),
        ("\ud800", InvalidInput, "U+D800"),
    ],
)
def test_bad_idempotency_keys_are_typed(key: Any, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says.replace("+", r"\+")):
        check_key(key, 256)
    assert check_key("order-1 ✓", 256) == "order-1 ✓" and check_key(None, 256) is None


# -- submit: typed, naming the field, nothing written ---------------------------------------------


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = load_settings(redis_url="redis://:s3cret@127.0.0.1:1/12", max_input_bytes=1024, max_metadata_bytes=256)
    client = AsyncClient(settings)
    catalog = {"tickets": {"name": "tickets", "version": "1", "input_schema": SCHEMA, "output_schema": {}}}

    async def read_catalog() -> dict[str, Any]:
        return catalog

    async def no_write(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused submit reached the store's write path")

    monkeypatch.setattr(client, "_catalog", read_catalog)
    monkeypatch.setattr(client.store, "create", no_write)
    monkeypatch.setattr(client, "enqueue", no_write)
    yield client
    await client.aclose()


@pytest.mark.parametrize(
    ("args", "error", "field", "says"),
    [
        ((7, {"tag": "abcdef"}), InvalidInput, "graph", "graph must be a str"),
        (("nope", {"tag": "abcdef"}), UnknownGraph, "graph", "served now: tickets"),
        (("tickets", ["tag"]), InvalidInput, "input", "expected a JSON object"),
        (("tickets", {"tag": "abcdef\n"}), InvalidInput, "input.tag", "pattern"),
        (("tickets", {"tag": "abcdef", "x": {1, 2}}), InvalidInput, "input.x", "set"),
        (("tickets", {"tag": "abcdef", "x": "\ud800"}), InvalidInput, "input.x", "surrogate"),
        (("tickets", {"tag": "abcdef", "x": "y" * 2000}), InputTooLarge, "input", "SLMFLOW_MAX_INPUT_BYTES=1,024"),
        (("tickets", {"tag": "abcdef"}, 5), InvalidInput, "idempotency_key", "must be a str"),
        (("tickets", {"tag": "abcdef"}, "k" * 300), InputTooLarge, "idempotency_key", "SLMFLOW_MAX_KEY_CHARS"),
        (("tickets", {"tag": "abcdef"}, None, ["m"]), InvalidInput, "metadata", "expected a JSON object"),
        (("tickets", {"tag": "abcdef"}, None, {"m": math.nan}), InvalidInput, "metadata.m", "NaN"),
        (("tickets", {"tag": "abcdef"}, None, {"m": "z" * 300}), InputTooLarge, "metadata", "MAX_METADATA_BYTES"),
    ],
)
async def test_every_submit_refusal_is_typed_names_the_field_and_writes_nothing(
    client: AsyncClient, args: tuple[Any, ...], error: type[Exception], field: str, says: str
) -> None:
    with pytest.raises(error) as caught:
        await client.submit(*args)
    assert getattr(caught.value, "context", {}).get("field") == field
    assert says in str(caught.value)


async def test_submit_many_checks_every_pair_before_writing(client: AsyncClient) -> None:
    with pytest.raises(InvalidInput) as caught:
        await client.submit_many([("tickets", {"tag": "abcdef"}), ("tickets", {"tag": "no"})])
    assert caught.value.context["field"] == "jobs[1].input.tag"
    with pytest.raises(InvalidInput, match=r"jobs\[0\] must be a \(graph, input\) pair"):
        await client.submit_many(["tickets"])  # type: ignore[list-item]


# -- passwords masked -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:secret@host", "redis://:***@host"),
        ("rediss://u:p@ss/w@h/0", "rediss://u:***@h/0"),
        ("postgresql://app:pa%40ss@db:5432/x?sslmode=require", "postgresql://app:***@db:5432/x?sslmode=require"),
        ("postgresql://db/x?user=a&password=zz&x=1", "postgresql://db/x?user=a&password=***&x=1"),
        ("cannot reach 'redis://a:b@h' (mail x@y.com)", "cannot reach 'redis://a:***@h' (mail x@y.com)"),
        ("redis://host:6379/0 and http://h:8000/v1", "redis://host:6379/0 and http://h:8000/v1"),
    ],
)
def test_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked


async def test_an_unreachable_redis_never_shows_its_password() -> None:
    client = AsyncClient(load_settings(redis_url="redis://slm:s3cret-pw@127.0.0.1:1/12"))
    try:
        with pytest.raises(EndpointUnreachable) as caught:
            await client.graphs()
    finally:
        await client.aclose()
    assert "s3cret-pw" not in str(caught.value) and "redis://slm:***@127.0.0.1:1/12" in str(caught.value)


def test_a_bad_setting_never_shows_a_password() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(checkpoint_url="postgress://app:s3cret@db/x")
    assert "s3cret" not in str(caught.value) and "app:***@db" in str(caught.value)
