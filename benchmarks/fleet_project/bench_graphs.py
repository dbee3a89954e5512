"""bench_small: a label step, then a tool-calling step granted one side-effect-free tool.

Used only by `benchmarks/fleet_throughput.py`. The module name is unique on purpose: the project
root goes on `sys.path`, and it must not shadow the repository's `agents`/`tools`/`graphs`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from slmflow import GraphSpec, JobState, Label, Skill, ToolCalls, ToolRegistry, skill_node

__all__ = ["BenchInput", "BenchOutput", "decide", "graph", "note", "record"]


@tool
def record(note: str) -> dict[str, Any]:
    """Record a short note about the text."""
    return {"recorded": note}


class BenchInput(BaseModel):
    """One text to judge."""

    text: str = Field(min_length=1, max_length=2000)


class BenchOutput(BaseModel):
    """The label and what the tool returned."""

    answer: str
    note: dict[str, Any]


decide = Skill(
    name="bench_decide",
    description="Whether a text asks a question.",
    instructions="Decide whether the text asks a question.",
    prompt="{text}",
    output=Label(labels=("yes", "no")),
)

note = Skill(
    name="bench_note",
    description="Record a note about the text.",
    instructions="Record a one-word note about the text with the record tool.",
    prompt="Text: {text}\nAsks a question: {answer}",
    output=ToolCalls(tools=("record",)),
)


class State(JobState, total=False):
    answer: str
    notes: list[dict[str, Any]]


def _finish(state: Any) -> dict[str, Any]:
    output = BenchOutput(answer=state["answer"], note=state["notes"][0]["result"])
    return {"output": output.model_dump(mode="json")}


builder = StateGraph(State)
builder.add_node("decide", skill_node(decide, lambda s: {"text": s["input"]["text"]}, "answer"))
builder.add_node(
    "note",
    skill_node(note, lambda s: {"text": s["input"]["text"], "answer": s["answer"]}, "notes"),
)
builder.add_node("finish", _finish)
builder.add_edge(START, "decide")
builder.add_edge("decide", "note")
builder.add_edge("note", "finish")
builder.add_edge("finish", END)

graph = GraphSpec(
    name="bench_small",
    description="Benchmark graph: a yes/no label, then one call of a side-effect-free tool.",
    builder=builder,
    input=BenchInput,
    output=BenchOutput,
    tools=ToolRegistry.of([record]),
    skills=(decide, note),
)
