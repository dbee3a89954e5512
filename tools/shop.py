"""The shop database and the tools a support agent may call on it.

The database is built from `shop.sql` on first use, at `$SHOP_DB` (default: a file in the slmflow
cache), so tool writes (opened cases) never touch the repository.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, tool
from pydantic import BaseModel, Field

from slmflow import ToolContext, idempotent

__all__ = [
    "ORDER_ID_PATTERN",
    "SHOP_TOOLS",
    "check_refund_eligibility",
    "connect",
    "lookup_order",
    "open_case",
]

ORDER_ID_PATTERN = r"^ORD-[0-9]{5}$"
TODAY = date(2026, 11, 24)  # the seed data's "today": eligibility must not drift with the clock
_SQL = Path(__file__).with_name("shop.sql")


def db_path() -> Path:
    """Where the shop database lives."""
    default = Path.home() / ".cache" / "slmflow" / "shop.db"
    return Path(os.environ.get("SHOP_DB", default))


def connect() -> sqlite3.Connection:
    """A connection to the shop database, created from `shop.sql` if it does not exist yet."""
    path = db_path()
    fresh = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    if fresh:
        connection.executescript(_SQL.read_text())
    elif "request_key" not in {row[1] for row in connection.execute("PRAGMA table_info(cases)")}:
        # A database built before cases were keyed by their call: add the key (older cases have none).
        connection.execute("ALTER TABLE cases ADD COLUMN request_key TEXT")
        connection.execute("CREATE UNIQUE INDEX IF NOT EXISTS cases_request_key ON cases (request_key)")
    return connection


class OrderRef(BaseModel):
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="Order id, like ORD-10012")


class CaseRequest(BaseModel):
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="Order id, like ORD-10012")
    summary: str = Field(max_length=200, description="One sentence: what the customer needs")


def _order(connection: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    row = connection.execute(
        "SELECT o.*, c.email AS customer_email, c.name AS customer_name FROM orders o "
        "JOIN customers c ON c.id = o.customer_id WHERE o.id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"no order {order_id}: use the order id exactly as the customer wrote it")
    return row


@idempotent  # a read
@tool(args_schema=OrderRef)
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order: its status, item, total, dates and the customer's email."""
    with connect() as connection:
        row = _order(connection, order_id)
    keys = (
        "id",
        "status",
        "item",
        "total",
        "placed_on",
        "delivered_on",
        "customer_email",
        "customer_name",
    )
    return {key: row[key] for key in keys}


@idempotent  # a read
@tool(args_schema=OrderRef)
def check_refund_eligibility(order_id: str) -> dict[str, Any]:
    """Check whether an order can be refunded under the shop's refund policy."""
    with connect() as connection:
        row = _order(connection, order_id)
        policy = connection.execute("SELECT * FROM refund_policy WHERE category = ?", (row["category"],)).fetchone()
    if row["delivered_on"] is None:
        return {
            "order_id": order_id,
            "eligible": False,
            "reason": f"order is {row['status']}, not delivered",
        }
    age = (TODAY - date.fromisoformat(row["delivered_on"])).days
    eligible = age <= policy["window_days"]
    reason = (
        f"delivered {age} days ago, within the {policy['window_days']}-day {row['category']} window"
        if eligible
        else f"delivered {age} days ago, outside the {policy['window_days']}-day {row['category']} window"
    )
    return {
        "order_id": order_id,
        "eligible": eligible,
        "reason": reason,
        "requires_return": bool(policy["requires_return"]),
    }


class CaseCall(CaseRequest):
    context: Annotated[ToolContext, InjectedToolArg]
    """The call's context, from slmflow (hidden from the model)."""


@idempotent  # a write, made idempotent by the call's key: a retried call finds its case
@tool(args_schema=CaseCall)
def open_case(order_id: str, summary: str, context: ToolContext) -> dict[str, Any]:
    """Open a support case for an order, for a human agent to follow up."""
    with connect() as connection:
        row = _order(connection, order_id)
        connection.execute(
            "INSERT INTO cases (order_id, customer_email, intent, summary, request_key) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (request_key) DO NOTHING",
            (order_id, row["customer_email"], "support", summary, context.key),
        )
        (case_id,) = connection.execute("SELECT id FROM cases WHERE request_key = ?", (context.key,)).fetchone()
    return {"case_id": case_id, "order_id": order_id}


SHOP_TOOLS = [lookup_order, check_refund_eligibility, open_case]
