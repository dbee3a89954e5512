"""order_change: identify the customer, narrow to their orders, propose the change, wait for a
human's approval, act once, reply. Requests the policy refuses are refused; anything else, or a
step no model could answer, is handed over to a human agent as an ordinary branch.

```
identify (code: find_customer) ─ no customer ───────────────────────────────┐
classify_request ─ other ───────────────────────────────────────────────────┤
choose_order (narrowed to the customer's orders) ─ failed ──────────────────┤
check_policy (code) ─ refused ─┐                                            │
propose_change (narrowed, cancel_order/start_return need approval) ─ failed ┤
                               │                                  handover (code: open_case)
reply_change ◄─────────────────┴────────────────────────────────────────────┘
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.order_change import ACTION_TOOLS, choose_order, classify_request, propose_change, reply_change
from slmflow import Goto, GraphSpec, JobContext, JobState, ToolRegistry, call_tool, skill_node
from tools.shop import ORDER_TOOLS, change_refusal

__all__ = ["OrderChangeResult", "OrderRequest", "graph"]


class OrderRequest(BaseModel):
    """A customer's message about one of their orders, from their account's email."""

    request_id: str = Field(min_length=1, max_length=64)
    email: str = Field(pattern=r"^[\w.+-]+@[\w-]+\.[\w.-]+$", max_length=200)
    message: str = Field(min_length=1, max_length=2000)


class OrderChangeResult(BaseModel):
    """What the job decided and did."""

    request_id: str
    customer_id: str | None
    action: str | None
    order_id: str | None
    decision: Literal["done", "refused", "handed_over"]
    why: str | None
    change: dict[str, Any] | None
    reply: str


class State(JobState, total=False):
    customer: dict[str, Any] | None
    action: str
    choice: dict[str, Any]
    why: str | None
    change: list[dict[str, Any]]
    failure: dict[str, Any]
    handed_over: str
    draft: dict[str, Any]


def _order_id(state: Mapping[str, Any]) -> str | None:
    return (state.get("choice") or {}).get("order_id")


def _order(state: Mapping[str, Any]) -> dict[str, Any] | None:
    orders = (state.get("customer") or {}).get("orders", [])
    return next((o for o in orders if o["id"] == _order_id(state)), None)


def _decision(state: Mapping[str, Any]) -> str:
    if state.get("handed_over"):
        return "handed_over"
    return "done" if state.get("change") else "refused"


async def identify(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
    """Find the customer by their account's email (a code node calling a tool)."""
    return {"customer": await call_tool(runtime, "find_customer", {"email": state["input"]["email"]})}


def _after_identify(state: Mapping[str, Any]) -> str:
    customer = state.get("customer")
    return "classify_request" if customer and customer["orders"] else "handover"


def _after_classify(state: Mapping[str, Any]) -> str:
    return "choose_order" if state["action"] in ACTION_TOOLS else "handover"


def check_policy(state: Mapping[str, Any]) -> dict[str, Any]:
    """The shop's policy decides whether the change may be made at all (no model is asked)."""
    order = _order(state)
    assert order is not None  # choose_order is narrowed to the customer's orders
    return {"why": change_refusal(state["action"], order)}


def _after_policy(state: Mapping[str, Any]) -> str:
    return "reply_change" if state.get("why") else "propose_change"


async def handover(state: Mapping[str, Any], runtime: Runtime[JobContext]) -> dict[str, Any]:
    """Hand the request to a human agent: a case on the order when there is one."""
    failure = state.get("failure")
    if not state.get("customer"):
        why = "no customer account has this email"
    elif failure:
        why = f"step {failure['step']} could not be answered ({', '.join(failure['reasons'])})"
    elif state.get("action") not in ACTION_TOOLS:
        why = "the request is not a cancellation or a return"
    else:
        why = "a person must look at it"
    if order_id := _order_id(state):
        summary = f"order_change handed over: {why}"[:200]
        await call_tool(runtime, "open_case", {"order_id": order_id, "summary": summary})
    return {"handed_over": why, "why": why}


def _finish(state: Mapping[str, Any]) -> dict[str, Any]:
    change = state.get("change")
    result = OrderChangeResult(
        request_id=state["input"]["request_id"],
        customer_id=(state.get("customer") or {}).get("customer_id"),
        action=state.get("action"),
        order_id=_order_id(state),
        decision=_decision(state),  # type: ignore[arg-type]
        why=state.get("why"),
        change=change[0]["result"] if change else None,
        reply=state["draft"]["reply"],
    )
    return {"output": result.model_dump(mode="json")}


def _reply_inputs(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "message": state["input"]["message"],
        "order_id": _order_id(state),
        "decision": _decision(state),
        "why": state.get("why") or "-",
        "name": (state.get("customer") or {}).get("name", "there"),
    }


builder = StateGraph(State, context_schema=JobContext)
builder.add_node("identify", identify)
builder.add_node(
    "classify_request", skill_node(classify_request, lambda s: {"message": s["input"]["message"]}, "action")
)
builder.add_node(
    "choose_order",
    skill_node(
        choose_order,
        lambda s: {
            "message": s["input"]["message"],
            "orders": s["customer"]["orders"],
            "listing": "\n".join(f"- {o['id']}: {o['item']} ({o['status']})" for o in s["customer"]["orders"]),
        },
        "choice",
        on_failure=Goto("handover"),
        then="check_policy",
    ),  # fmt: skip
    destinations=("check_policy", "handover"),
)
builder.add_node("check_policy", check_policy)
builder.add_node(
    "propose_change",
    skill_node(
        propose_change,
        lambda s: {
            "message": s["input"]["message"],
            "action": s["action"],
            "order_id": _order_id(s),
            "item": (_order(s) or {}).get("item"),
        },
        "change",
        on_failure=Goto("handover"),
        then="reply_change",
    ),  # fmt: skip
    destinations=("reply_change", "handover"),
)
builder.add_node("handover", handover)
builder.add_node("reply_change", skill_node(reply_change, _reply_inputs, "draft"))
builder.add_node("finish", _finish)
builder.add_edge(START, "identify")
builder.add_conditional_edges("identify", _after_identify, ["classify_request", "handover"])
builder.add_conditional_edges("classify_request", _after_classify, ["choose_order", "handover"])
builder.add_conditional_edges("check_policy", _after_policy, ["reply_change", "propose_change"])
builder.add_edge("handover", "reply_change")
builder.add_edge("reply_change", "finish")
builder.add_edge("finish", END)

graph = GraphSpec(
    name="order_change",
    description="Cancel or return a customer's order after a human approves it; refuse or hand over the rest.",
    builder=builder,
    input=OrderRequest,
    output=OrderChangeResult,
    tools=ToolRegistry.of(ORDER_TOOLS),
    skills=(classify_request, choose_order, propose_change, reply_change),
)
