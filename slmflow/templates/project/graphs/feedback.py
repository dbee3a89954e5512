"""The `feedback` graph: classify a customer's message with the small model, then file it with a tool."""

from __future__ import annotations

from typing import Any

from agents.feedback import classify_feedback
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from tools.notes import file_note

from slmflow import GraphSpec, JobContext, JobState, ToolRegistry, call_tool, skill_node

__all__ = ["FeedbackInput", "FeedbackOutput", "graph"]


class FeedbackInput(BaseModel):
    """One customer message."""

    text: str = Field(min_length=1, max_length=4000)


class FeedbackOutput(BaseModel):
    """Its category, and what filing it returned."""

    category: str
    filed: dict[str, Any]


class State(JobState, total=False):
    category: str
    filed: dict[str, Any]


async def file(state: State, runtime: Runtime[JobContext]) -> dict[str, Any]:
    """A code step: file the message through the tool (on a fleet, a tools worker runs it, once)."""
    filed = await call_tool(runtime, "file_note", {"category": state["category"], "text": state["input"]["text"]})
    output = FeedbackOutput(category=state["category"], filed=filed)
    return {"filed": filed, "output": output.model_dump(mode="json")}


builder = StateGraph(State, context_schema=JobContext)
builder.add_node("classify", skill_node(classify_feedback, lambda s: {"text": s["input"]["text"]}, "category"))
builder.add_node("file", file)
builder.add_edge(START, "classify")
builder.add_edge("classify", "file")
builder.add_edge("file", END)

graph = GraphSpec(
    name="feedback",
    description="Classify a customer's message (praise, complaint, question) and file it.",
    builder=builder,
    input=FeedbackInput,
    output=FeedbackOutput,
    tools=ToolRegistry.of([file_note]),
    skills=(classify_feedback,),
)
