"""The skills of the order_change job: what the customer asks, which of their orders, the change
proposed for approval, and the reply.

Two answers are narrowed to the job's own data (`Skill(narrow=...)`): the order is one of the
identified customer's orders (an `enum` of their ids in the object's schema), and the proposed call
names that order and no other (an `enum` in the tools' argument schemas).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slmflow import Label, Narrow, Object, Skill, ToolCalls

__all__ = [
    "ACTION_TOOLS",
    "ACTIONS",
    "ChangeReply",
    "OrderChoice",
    "choose_order",
    "classify_request",
    "propose_change",
    "reply_change",
]

ORDER_ID = re.compile(r"ORD-\d{5}")
REASON_HINT = "The customer's reason"
"""How the change tools' `reason` argument is described to the model (tools/shop.py)."""
ACTIONS = {
    "cancel": "cancel an order that has not shipped yet",
    "return": "return a delivered order (send it back for a refund)",
    "other": "anything else: change an address, a complaint, a question, several requests at once",
}
ACTION_TOOLS = {"cancel": "cancel_order", "return": "start_return"}
ORDER_ID_PATTERN = r"^ORD-[0-9]{5}$"


class OrderChoice(BaseModel):
    """The order a message is about, e.g. {"order_id": "ORD-10036"}."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema.pop("description", None))
    order_id: str = Field(pattern=ORDER_ID_PATTERN)


def _orders_listing(orders: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {o['id']}: {o['item']} ({o['status']}, placed {o['placed_on']})" for o in orders)


def customer_orders(values: Mapping[str, Any]) -> Narrow:
    """The order is one of this customer's orders (found by `find_customer`)."""
    return Narrow(fields={"order_id": tuple(o["id"] for o in values["orders"])})


def quoted_order_is_chosen(choice: OrderChoice, values: Mapping[str, Any]) -> Iterable[str]:
    """The order is one of the customer's; a message that quotes one of their order ids is about that
    order; one that quotes only orders of someone else is about none of theirs (no answer passes: a
    human looks at it)."""
    order_id, mine = choice.order_id, {o["id"] for o in values["orders"]}
    quoted = ORDER_ID.findall(values["message"])
    theirs = [q for q in quoted if q in mine]
    if order_id not in mine:  # narrowing keeps it out of the model's choice; the check keeps it out of any answer
        yield f"{order_id} is not an order of this customer: choose one of {', '.join(sorted(mine))}"
    elif quoted and not theirs:
        yield f"the message quotes {quoted[0]}, which is not an order of this customer"
    elif theirs and order_id not in theirs:
        yield f"the customer writes about {theirs[0]}, not {order_id}"


def the_chosen_order(values: Mapping[str, Any]) -> Narrow:
    """The proposed change is about the order chosen before, whichever tool it calls."""
    return Narrow(arguments={tool: {"order_id": (values["order_id"],)} for tool in ACTION_TOOLS.values()})


def calls_the_requested_action(calls: list[Any], values: Mapping[str, Any]) -> Iterable[str]:
    """The change is the one the customer asked for, with a reason of the customer's (a small model
    copies the argument's description instead: the person approving would read that)."""
    wanted = ACTION_TOOLS[values["action"]]
    for call in calls:
        if call.name != wanted:
            yield f"the customer asks to {values['action']} the order: call {wanted}, not {call.name}"
        if str(call.arguments.get("reason", "")).strip().lower().startswith(REASON_HINT.lower()):
            yield "give the customer's own reason in a few words, not the description of the argument"


class ChangeReply(BaseModel):
    """A reply to the customer, e.g. {"reply": "Hi Grace, your order ORD-10036 is cancelled ..."}."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema.pop("description", None))
    reply: str = Field(max_length=240)


def reply_cites_the_order_only(reply: ChangeReply, values: Mapping[str, Any]) -> Iterable[str]:
    """The reply names the customer's order (when there is one) and no other order."""
    order_id = values.get("order_id")
    if order_id and order_id not in reply.reply:
        yield f"the reply must mention the order id {order_id}"
    for other in set(ORDER_ID.findall(reply.reply)) - {order_id}:
        yield f"the reply mentions order {other}, which this reply is not about"


_REFUSAL = re.compile(r"\b(cannot|can't|can ?not|unable|not able|unfortunately|not possible|sorry)\b", re.IGNORECASE)


_DONE = re.compile(r"\b(?:has been|have been|was|were|is now|are now|is|are) (?:cancel+ed|returned|refunded)\b",
                   re.IGNORECASE)  # fmt: skip


def reply_says_the_decision(reply: ChangeReply, values: Mapping[str, Any]) -> Iterable[str]:
    """A refusal says so; a change made is not told as refused; a change not made is not told as made."""
    decision = values["decision"]
    if decision == "refused" and not _REFUSAL.search(reply.reply):
        yield f"the request is refused ({values['why']}): say that it cannot be done, and why"
    if decision == "done" and _REFUSAL.search(reply.reply):
        yield "the change was made: do not tell the customer it cannot be done"
    if decision != "done" and (claimed := _DONE.search(reply.reply)):
        yield f"nothing was changed ({values['why']}): do not tell the customer it {claimed.group()}"


classify_request = Skill(
    name="classify_request",
    description="Which change of an order the customer asks for.",
    instructions=(
        "You handle messages to an online shop. What does the customer ask for?\n"
        + "\n".join(f"- {label}: {text}" for label, text in ACTIONS.items())
    ),
    prompt="{message}",
    output=Label(labels=tuple(ACTIONS)),
)

choose_order = Skill(
    name="choose_order",
    description="Which of the customer's orders the message is about.",
    instructions="You handle messages to an online shop. Which of the customer's orders is the message about?",
    prompt="The customer's orders:\n{listing}\n\nMessage:\n{message}",
    output=Object(model=OrderChoice),
    checks=(quoted_order_is_chosen,),
    narrow=customer_orders,
)

propose_change = Skill(
    name="propose_change",
    description="The order change to make, proposed for a human's approval.",
    instructions=(
        "You are a support agent of an online shop. Make the change the customer asks for on their order: "
        "cancel_order to cancel it, start_return to return it. Give the customer's reason in a few words."
    ),
    prompt="The customer asks to {action} order {order_id} ({item}).\n\nMessage:\n{message}",
    output=ToolCalls(tools=("cancel_order", "start_return")),
    checks=(calls_the_requested_action,),
    narrow=the_chosen_order,
)

reply_change = Skill(
    name="reply_change",
    description="A short reply telling the customer what was done, or why not.",
    instructions=(
        "You are a friendly support agent for an online shop. Write a short reply (2 sentences) to the "
        "customer saying what was done about their request, or why it cannot be done. Mention the order id."
    ),
    prompt=(
        "Message:\n{message}\n\nOrder id: {order_id}\nDecision: {decision}\nWhy: {why}\n\nWrite the reply to {name}."
    ),
    output=Object(model=ChangeReply),
    checks=(reply_cites_the_order_only, reply_says_the_decision),
    max_tokens=128,
)
