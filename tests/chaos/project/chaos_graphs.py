"""chaos: a yes/no label, then one call of `stamp` (idempotent), then one of `charge` (not).

Used only by the chaos suite (`tests/chaos`, `benchmarks/chaos.py`). The module name is unique on
purpose: the project root goes on `sys.path` and must shadow nothing.

Each tool sleeps `CHAOS_TOOL_SLEEP_S` (default 0.2 s) so that a kill can land mid-call, and writes
to Postgres at `CHAOS_PG_URL` (tables created by the harness, never here):

- `chaos_runs`: one row per run of a tool, written when the run starts (`done_at` set when its
  effect is written), with the process (`pid`, `ppid`: the tools worker) that ran it;
- `chaos_effects`: the side effect. `stamp` is idempotent by its call key (`ON CONFLICT (tool,
  call_key) DO NOTHING`), `charge` is not (its `call_key` is NULL: every run is one more effect).

A job with more than one `chaos_effects` row for a tool was done twice. `ungranted` is registered
with the graph but granted to no skill: only a forged message could ever run it.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import psycopg
from langchain_core.tools import InjectedToolArg, tool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from slmflow import GraphSpec, JobState, Label, Skill, ToolCalls, ToolContext, ToolRegistry, idempotent, skill_node

__all__ = ["ChaosInput", "ChaosOutput", "charge", "graph", "stamp", "ungranted"]

_RETRY_S = 30.0  # the tool outlives a restart of its own database (the Postgres scenario)


def _sleep_s() -> float:
    return float(os.environ.get("CHAOS_TOOL_SLEEP_S", "0.2"))


def _connect() -> psycopg.Connection[Any]:
    deadline = time.monotonic() + _RETRY_S
    while True:
        try:
            return psycopg.connect(os.environ["CHAOS_PG_URL"], autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _started(name: str, job_id: str | None, ref: str, call_key: str | None) -> int:
    with _connect() as connection:
        row = connection.execute(
            "INSERT INTO chaos_runs (tool, job_id, ref, call_key, pid, ppid) VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (name, job_id, ref, call_key, os.getpid(), os.getppid()),
        ).fetchone()
        assert row is not None
        return int(row[0])


def _effect(name: str, run_id: int, job_id: str | None, ref: str, call_key: str | None, dedupe: bool) -> None:
    conflict = " ON CONFLICT (tool, call_key) DO NOTHING" if dedupe else ""
    deadline = time.monotonic() + _RETRY_S
    while True:
        try:
            with _connect() as connection, connection.transaction():
                connection.execute(
                    f"INSERT INTO chaos_effects (tool, job_id, ref, call_key) VALUES (%s, %s, %s, %s){conflict}",
                    (name, job_id, ref, call_key),
                )
                connection.execute("UPDATE chaos_runs SET done_at = clock_timestamp() WHERE id = %s", (run_id,))
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@idempotent
@tool
def stamp(ref: str, context: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """Stamp the request `ref` as seen (idempotent: once per call key)."""
    run_id = _started("stamp", context.job_id, ref, context.key)
    time.sleep(_sleep_s())
    _effect("stamp", run_id, context.job_id, ref, context.key, dedupe=True)
    return {"stamped": ref, "key": context.key}


@tool
def charge(ref: str, amount_cents: int, context: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """Charge `amount_cents` for the request `ref` (not idempotent: every run charges)."""
    run_id = _started("charge", context.job_id, ref, context.key)
    time.sleep(_sleep_s())
    _effect("charge", run_id, context.job_id, ref, None, dedupe=False)
    return {"charged": amount_cents, "ref": ref}


@tool
def ungranted(ref: str) -> dict[str, Any]:
    """Granted to no skill: it must never run."""
    _started("ungranted", None, ref, None)
    return {"ran": ref}


class ChaosInput(BaseModel):
    """One request: its reference (the submit's idempotency key) and a text to judge."""

    ref: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=2000)


class ChaosOutput(BaseModel):
    """The label and what each tool returned."""

    answer: str
    stamp: dict[str, Any]
    charge: dict[str, Any]


decide = Skill(
    name="chaos_decide",
    description="Whether a request should be charged.",
    instructions="Answer yes if the request should be charged.",
    prompt="ref={ref}\n{text}",
    output=Label(labels=("yes", "no")),
)
stamp_step = Skill(
    name="chaos_stamp",
    description="Stamp the request.",
    instructions="Stamp the request with the stamp tool.",
    prompt="ref={ref}\nanswer={answer}",
    output=ToolCalls(tools=("stamp",)),
)
charge_step = Skill(
    name="chaos_charge",
    description="Charge the request.",
    instructions="Charge the request with the charge tool.",
    prompt="ref={ref}\nanswer={answer}",
    output=ToolCalls(tools=("charge",)),
)


class State(JobState, total=False):
    answer: str
    stamps: list[dict[str, Any]]
    charges: list[dict[str, Any]]


def _inputs(state: Any) -> dict[str, Any]:
    return {"ref": state["input"]["ref"], "answer": state["answer"]}


def _finish(state: Any) -> dict[str, Any]:
    output = ChaosOutput(answer=state["answer"], stamp=state["stamps"][0]["result"],
                         charge=state["charges"][0]["result"])  # fmt: skip
    return {"output": output.model_dump(mode="json")}


builder = StateGraph(State)
builder.add_node(
    "decide", skill_node(decide, lambda s: {"ref": s["input"]["ref"], "text": s["input"]["text"]}, "answer")
)
builder.add_node("stamp", skill_node(stamp_step, _inputs, "stamps"))
builder.add_node("charge", skill_node(charge_step, _inputs, "charges"))
builder.add_node("finish", _finish)
builder.add_edge(START, "decide")
builder.add_edge("decide", "stamp")
builder.add_edge("stamp", "charge")
builder.add_edge("charge", "finish")
builder.add_edge("finish", END)

graph = GraphSpec(
    name="chaos",
    description="Chaos suite graph: a label, an idempotent tool call, a non-idempotent one.",
    builder=builder,
    input=ChaosInput,
    output=ChaosOutput,
    tools=ToolRegistry.of([stamp, charge, ungranted], timeout=10.0),  # a lost call is given up on in 20 s
    skills=(decide, stamp_step, charge_step),
)
