"""An agent loop: a skill node in a LangGraph cycle, each tool result fed into the next prompt."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

from langchain_core.tools import InjectedToolArg, tool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from slmflow import GraphSpec, JobContext, JobState, Skill, ToolCalls, ToolContext, ToolRegistry, idempotent, skill_node


@idempotent
@tool
def note(text: str, context: Annotated[ToolContext, InjectedToolArg]) -> str:
    """Write down a note."""
    return f"noted {text} ({context.key})"


class Topic(BaseModel):
    topic: str
    passes: int = 3


class Notes(BaseModel):
    notes: list[str]


class State(JobState):
    notes: Annotated[list[str], operator.add]
    last: NotRequired[Any]


write_note = Skill(name="write_note", instructions="Write the next note on the topic.",
                   prompt="Topic: {topic}\nNotes so far: {notes}", output=ToolCalls(tools=("note",)))  # fmt: skip


def _inputs(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"topic": state["input"]["topic"], "notes": state.get("notes", [])}


def _again(state: Mapping[str, Any]) -> str:
    return "finish" if len(state["notes"]) >= state["input"]["passes"] else "write"


builder = StateGraph(State, context_schema=JobContext)
builder.add_node("write", skill_node(write_note, _inputs, "last"))
builder.add_node("keep", lambda state: {"notes": [state["last"][0]["result"]]})
builder.add_node("finish", lambda state: {"output": {"notes": state["notes"]}})
builder.add_edge(START, "write")
builder.add_edge("write", "keep")
builder.add_conditional_edges("keep", _again, ["write", "finish"])
builder.add_edge("finish", END)

graph = GraphSpec("notes", builder, Topic, Notes, ToolRegistry.of([note]), skills=(write_note,))
