"""Hostile input to `Client.submit`: every call returns a job or raises a typed error, and writes nothing.

A fake graph is published straight into the catalog of Redis db 12 (no worker, no project code):
the SDK knows it only by the JSON Schema the catalog holds, as an application does. A second,
Redis-free test compares the SDK's validator with pydantic on generated strings and numbers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, create_model

from slmflow import Client, SlmflowError
from slmflow.errors import InvalidInput
from slmflow.fleet.store import JobStore
from slmflow.settings import load_settings
from slmflow.validation import validate

REDIS_URL = "redis://127.0.0.1:6379/12"
GRAPH = "fuzz_graph"
CATALOG_KEY = f"slmflow:catalog:{GRAPH}"
EXAMPLES = 300


class Nested(BaseModel):
    note: str = Field(max_length=20)
    level: int = Field(ge=0, le=5)


class FuzzInput(BaseModel):
    tag: str = Field(pattern=r"^[a-z0-9]{6,40}$")
    title: str = Field(min_length=1, max_length=30)
    count: int = Field(ge=0, le=1000)
    extra: Nested | None = None


def publish_catalog() -> None:
    entry = {"name": GRAPH, "version": "1", "description": "fuzzed", "input_schema": FuzzInput.model_json_schema(),
             "output_schema": {"type": "object"}}  # fmt: skip

    async def publish() -> None:
        store = JobStore(REDIS_URL, ttl_s=600)
        await store.publish_graphs([entry], ttl_s=600)
        await store.aclose()

    asyncio.run(publish())


# -- strategies -----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
not_json = st.sampled_from([
    {1, 2}, b"bytes", dt.datetime(2024, 1, 1), math.nan, math.inf, -math.inf, "\ud800", "ok\udfffok", Decimal("1.5"),
    object(), {1: "int key"}, {None: 1}, {("t",): 1}, 10**5000, complex(1, 2), [float("nan")],
    {"deep": {"x": {b"k": 1}}},
])  # fmt: skip


@st.composite
def deep(draw: st.DrawFn) -> Any:
    value: Any = draw(json_scalars)
    for _ in range(draw(st.integers(50, 400))):
        value = {"a": value} if draw(st.booleans()) else [value]
    return value


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], percent: int) -> st.SearchStrategy[Any]:
    """`good` `percent`% of the time, else `bad`: so that later arguments are reached too."""
    return st.integers(0, 99).flatmap(lambda roll: good if roll < percent else bad)


tags = st.from_regex(r"^[a-z0-9]{6,40}$", fullmatch=True) | st.text(max_size=45) | st.from_regex(r"\A[a-z]{6}\n\Z")
good_inputs = st.fixed_dictionaries(
    {"tag": mostly(st.from_regex(r"^[a-z0-9]{6,40}$", fullmatch=True), tags, 75),
     "title": mostly(st.text(min_size=1, max_size=30), st.text(max_size=35), 85),
     "count": mostly(st.integers(0, 1000), st.integers(-5, 1005) | st.floats(-10, 2000), 85)},
    optional={"extra": st.none() | st.fixed_dictionaries({"note": st.text(max_size=25), "level": st.integers(-1, 6)})
              | json_values, "more": json_values},
)  # fmt: skip
bad_inputs = (
    json_values
    | not_json
    | deep()
    | st.builds(lambda d, v: {**d, "junk": v}, good_inputs, not_json)
    | st.builds(lambda d, n: {**d, "title": "x" * n}, good_inputs, st.integers(0, 5000))
    | st.builds(lambda d, n: {**d, "more": "y" * n}, good_inputs, st.integers(1000, 5000))
)
inputs = mostly(good_inputs, bad_inputs, 60)
graphs = mostly(st.just(GRAPH), st.text(max_size=20) | st.integers() | st.none() | st.binary(max_size=5)
                | st.just([GRAPH]) | st.just(GRAPH + "\x00"), 90)  # fmt: skip
keys = mostly(
    st.none() | st.uuids().map(str) | st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs")),
                                              min_size=1, max_size=64),
    st.text(max_size=80) | st.integers() | st.just("") | st.binary(max_size=5) | st.floats()
    | st.sampled_from(["k\x00", "k\n", "\ud800", "k" * 65, "k" * 64, "\u202ekey"]),
    85,
)  # fmt: skip
metadata = mostly(
    st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    json_values | not_json | st.builds(lambda n: {"blob": "m" * n}, st.integers(0, 1000)),
    85,
)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    publish_catalog()
    yield client
    client.flushdb()
    client.close()


@pytest.mark.redis
def test_fuzzed_submits_return_a_job_or_raise_a_typed_error_and_write_nothing(redis_client: redis.Redis) -> None:
    client_settings = load_settings(redis_url=REDIS_URL, max_input_bytes=2048, max_metadata_bytes=512, max_key_chars=64)
    untyped: list[str] = []
    leaked: list[str] = []
    worker_refuses: list[str] = []
    outcomes = {"jobs": 0, "typed": 0}
    reasons: Counter[str] = Counter()
    with Client(client_settings) as client:

        @seed(14)
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(graph=graphs, data=inputs, key=keys, meta=metadata)
        def submit(graph: Any, data: Any, key: Any, meta: Any) -> None:
            if redis_client.dbsize() != 1:  # the last example made a job: start clean
                redis_client.flushdb()
                publish_catalog()
            try:
                job = client.submit(graph, data, idempotency_key=key, metadata=meta)
            except SlmflowError as exc:
                outcomes["typed"] += 1
                reasons[f"{type(exc).__name__} {exc.context.get('field', '')}"] += 1
                written = set(redis_client.keys("*")) - {CATALOG_KEY}
                if written:
                    leaked.append(f"{sorted(written)[:3]} after a refused submit")
            except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
                untyped.append(f"{type(exc).__name__}: {str(exc)[:100]}")
            else:
                outcomes["jobs"] += 1
                try:  # what the SDK accepts, the worker's pydantic model accepts too
                    FuzzInput.model_validate(job.get().input)
                except ValidationError as exc:
                    worker_refuses.append(f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")

        submit()
    print(f"\nfuzzed submits: {EXAMPLES} examples, {outcomes['jobs']} jobs, {outcomes['typed']} typed errors, "
          f"{len(untyped)} untyped, {len(leaked)} refused calls that wrote, {len(worker_refuses)} jobs the worker "
          f"refuses; refusals: {reasons.most_common(12)}")  # fmt: skip
    assert not untyped, f"{len(untyped)} untyped errors, e.g. {sorted(set(untyped))[:8]}"
    assert not leaked, leaked[:5]
    assert not worker_refuses, f"{len(worker_refuses)} accepted inputs the worker refuses, e.g. {worker_refuses[:5]}"
    assert outcomes["jobs"] >= 20, "the fuzz should also make valid jobs"


# -- one validator, pydantic's meaning ------------------------------------------------------------

PATTERNS = [
    r"^[a-z0-9]{6,40}$",
    r"^\w+$",
    r"^\s*$",
    r"^\d{3}-\d{4}$",
    r"^[^$]+\$$",
    r"\bword\b",
    r"^\p{L}+$",
    r"(?i)^straße$",
    r"^.+$",
    r"^[[:alpha:]]+$",
]
tricky = st.text(
    alphabet=st.sampled_from("abzAZ09_-$ \n\r\t\x0b\x0c\x1c\x1d\u0085\u00a0\u2028\u0301é١ßẞ😀"), max_size=12
)


def accepted_by_pydantic(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def accepted_by_sdk(schema: dict[str, Any], data: dict[str, Any]) -> bool:
    try:
        validate(schema, data, graph="differential")
    except InvalidInput:
        return False
    return True


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_sdk_accepts_exactly_the_strings_pydantic_accepts(pattern: str) -> None:
    model = create_model("Patterned", value=(str, Field(pattern=pattern)))
    schema = model.model_json_schema()
    strings = tricky | st.from_regex(r"\A[a-z0-9]{6,8}\n?\Z") | st.text(max_size=10)

    @seed(6)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(text=strings)
    def compare(text: str) -> None:
        data = {"value": text}
        assert accepted_by_sdk(schema, data) == accepted_by_pydantic(model, data), repr(text)

    compare()


class Typed(BaseModel):
    whole: int | None = None
    real: float | None = None
    raw: bytes | None = Field(default=None, max_length=4)
    short: str | None = Field(default=None, max_length=3)


NUMBERS = st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [1e19, -1e19, 2.0**63, -(2.0**63), 2.0**63 - 1024, 10**400, 2**1024, 1e308, 1.0, -0.0, True]
)  # fmt: skip


@seed(7)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
@given(whole=NUMBERS, real=NUMBERS, raw=tricky, short=tricky)
def test_what_the_sdk_accepts_pydantic_accepts_for_numbers_and_lengths(
    whole: Any, real: Any, raw: str, short: str
) -> None:
    schema = Typed.model_json_schema()
    for data in ({"whole": whole}, {"real": real}, {"raw": raw}, {"short": short}):
        sdk, worker = accepted_by_sdk(schema, data), accepted_by_pydantic(Typed, data)
        assert worker if sdk else True, f"the SDK accepts {data!r}, pydantic does not"
        if not any(isinstance(v, bool) for v in data.values()):  # JSON Schema's integer is no bool: stricter
            assert sdk == worker, data
