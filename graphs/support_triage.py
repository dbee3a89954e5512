"""support_triage: classify a ticket, extract its fields, resolve it with tools, draft a reply."""

from __future__ import annotations

import json
from typing import Any

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from agents.support_triage import classify, draft_reply, extract, lookup, resolve
from slmflow import GraphSpec, JobState, ToolRegistry, skill_node
from tools.shop import SHOP_TOOLS

__all__ = ["Ticket", "TriageResult", "graph"]


class Ticket(BaseModel):
    """A customer support ticket."""

    ticket_id: str = Field(min_length=1, max_length=64)
    subject: str = Field(max_length=200)
    body: str = Field(min_length=1, max_length=4000)


class TriageResult(BaseModel):
    """What the job decided and did."""

    ticket_id: str
    intent: str
    fields: dict[str, Any]
    order: dict[str, Any] | None
    resolution: dict[str, Any] | None
    reply: str


class State(JobState, total=False):
    intent: str
    fields: dict[str, Any]
    lookup: list[dict[str, Any]]
    resolution: list[dict[str, Any]]
    draft: dict[str, Any]


def _ticket(state: Any) -> str:
    return f"Subject: {state['input']['subject']}\n\n{state['input']['body']}"


def _order_id(state: Any) -> str | None:
    return (state.get("fields") or {}).get("order_id")


def _order(state: Any) -> dict[str, Any] | None:
    return state["lookup"][0]["result"] if state.get("lookup") else None


def _resolution(state: Any) -> dict[str, Any] | None:
    if not state.get("resolution"):
        return None
    call = state["resolution"][0]
    return {"tool": call["name"], "result": call["result"]}


def _after_extract(state: Any) -> str:
    return "lookup_order" if _order_id(state) else "draft_reply"


def _finish(state: Any) -> dict[str, Any]:
    output = TriageResult(
        ticket_id=state["input"]["ticket_id"],
        intent=state["intent"],
        fields=state["fields"],
        order=_order(state),
        resolution=_resolution(state),
        reply=state["draft"]["reply"],
    )
    return {"output": output.model_dump(mode="json")}


builder = StateGraph(State)
builder.add_node("classify_intent", skill_node(classify, lambda s: {"ticket": _ticket(s)}, "intent"))
builder.add_node("extract_fields", skill_node(extract, lambda s: {"ticket": _ticket(s)}, "fields"))
builder.add_node(
    "lookup_order",
    skill_node(lookup, lambda s: {"ticket": _ticket(s), "order_id": _order_id(s)}, "lookup"),
)
builder.add_node(
    "resolve",
    skill_node(
        resolve,
        lambda s: {
            "ticket": _ticket(s),
            "intent": s["intent"],
            "order_id": _order_id(s),
            "order": json.dumps(_order(s)),
        },
        "resolution",
    ),
)
builder.add_node(
    "draft_reply",
    skill_node(
        draft_reply,
        lambda s: {
            "ticket": _ticket(s),
            "intent": s["intent"],
            "order_id": _order_id(s),
            "email": (s.get("fields") or {}).get("email"),
            "customer_email": (_order(s) or {}).get("customer_email"),
            "resolution": json.dumps(_resolution(s)),
        },
        "draft",
    ),
)
builder.add_node("finish", _finish)
builder.add_edge(START, "classify_intent")
builder.add_edge("classify_intent", "extract_fields")
builder.add_conditional_edges("extract_fields", _after_extract, ["lookup_order", "draft_reply"])
builder.add_edge("lookup_order", "resolve")
builder.add_edge("resolve", "draft_reply")
builder.add_edge("draft_reply", "finish")
builder.add_edge("finish", END)

graph = GraphSpec(
    name="support_triage",
    description="Triage a support ticket: intent, fields, order lookup, resolution, reply.",
    builder=builder,
    input=Ticket,
    output=TriageResult,
    tools=ToolRegistry.of(SHOP_TOOLS),
    skills=(classify, extract, lookup, resolve, draft_reply),
)
