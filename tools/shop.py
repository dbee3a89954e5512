"""The shop database and the tools a support agent may call on it.

The database is built from `shop.sql` on first use, at `$SHOP_DB` (default: a file in the slmflow
cache), so tool writes (opened cases) never touch the repository.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, tool
from pydantic import BaseModel, Field

from slmflow import ToolContext, idempotent, needs_approval

__all__ = [
    "ORDER_ID_PATTERN",
    "ORDER_TOOLS",
    "RETURN_EXCLUDED",
    "SHOP_TOOLS",
    "cancel_order",
    "change_refusal",
    "find_customer",
    "start_return",
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
    if not path.exists():
        _create(path)
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    if "request_key" not in {row[1] for row in connection.execute("PRAGMA table_info(cases)")}:
        # A database built before cases were keyed by their call: add the key (older cases have none).
        connection.execute("ALTER TABLE cases ADD COLUMN request_key TEXT")
        connection.execute("CREATE UNIQUE INDEX IF NOT EXISTS cases_request_key ON cases (request_key)")
    if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone() is None:
        # A database built before order changes: add their table from shop.sql.
        sql = _SQL.read_text()
        start = sql.index("CREATE TABLE changes")
        connection.executescript(sql[start : sql.index(";", start) + 1])
    return connection


def _create(path: Path) -> None:
    """Build the database beside `path`, then link it into place only if nobody did meanwhile: jobs
    running at once never see a half-built database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with closing(sqlite3.connect(scratch)) as connection:
        connection.executescript(_SQL.read_text())
        connection.commit()
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass
    finally:
        scratch.unlink()


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


# --- order changes (the order_change job) ---------------------------------------------------------

RETURN_EXCLUDED = frozenset({"final_sale", "digital"})
"""Categories that are never returned (the refund policy's notes)."""


class CustomerRef(BaseModel):
    email: str = Field(pattern=r"^[\w.+-]+@[\w-]+\.[\w.-]+$", description="The customer's email")


@idempotent  # a read
@tool(args_schema=CustomerRef)
def find_customer(email: str) -> dict[str, Any] | None:
    """The customer with this email and their orders (id, item, status, dates, category), or null."""
    with connect() as connection:
        customer = connection.execute("SELECT id, name FROM customers WHERE email = ?", (email.lower(),)).fetchone()
        if customer is None:
            return None
        rows = connection.execute(
            "SELECT o.id, o.item, o.status, o.placed_on, o.delivered_on, o.category, p.window_days FROM orders o "
            "JOIN refund_policy p ON p.category = o.category WHERE o.customer_id = ? ORDER BY o.placed_on",
            (customer["id"],),
        ).fetchall()
    return {"customer_id": customer["id"], "name": customer["name"], "orders": [dict(row) for row in rows]}


def change_refusal(action: str, order: Mapping[str, Any]) -> str | None:
    """Why the shop's policy refuses `action` ('cancel' or 'return') on `order`, or None if it allows it."""
    if action == "cancel":
        return (
            None
            if order["status"] == "processing"
            else f"the order is {order['status']}: only orders still processing can be cancelled"
        )
    if order["status"] != "delivered" or order["delivered_on"] is None:
        return f"the order is {order['status']}, not delivered: it cannot be returned yet"
    if order["category"] in RETURN_EXCLUDED:
        return f"{order['category'].replace('_', ' ')} items cannot be returned"
    age = (TODAY - date.fromisoformat(order["delivered_on"])).days
    if age > order["window_days"]:
        return f"it was delivered {age} days ago, outside the {order['window_days']}-day return window"
    return None


class ChangeCall(BaseModel):
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="Order id, like ORD-10034")
    reason: str = Field(min_length=3, max_length=120, description="The customer's reason, in a few words")
    context: Annotated[ToolContext, InjectedToolArg]
    """The call's context, from slmflow (hidden from the model)."""


def _change(kind: str, order_id: str, reason: str, context: ToolContext) -> dict[str, Any]:
    with connect() as connection:
        connection.execute(
            "INSERT INTO changes (order_id, kind, reason, request_key) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (request_key) DO NOTHING",
            (order_id, kind, reason, context.key),
        )
        (change_id,) = connection.execute("SELECT id FROM changes WHERE request_key = ?", (context.key,)).fetchone()
        if kind == "cancel":
            connection.execute("UPDATE orders SET status = 'cancelled' WHERE id = ? AND status = 'processing'",
                               (order_id,))  # fmt: skip
    return {"change_id": change_id, "order_id": order_id, "kind": kind}


@needs_approval  # a side effect a human confirms first
@idempotent  # made idempotent by the call's key: a retried call finds its change
@tool(args_schema=ChangeCall)
def cancel_order(order_id: str, reason: str, context: ToolContext) -> dict[str, Any]:
    """Cancel an order that is still processing."""
    return _change("cancel", order_id, reason, context)


@needs_approval
@idempotent
@tool(args_schema=ChangeCall)
def start_return(order_id: str, reason: str, context: ToolContext) -> dict[str, Any]:
    """Start the return of a delivered order (a return label is sent to the customer)."""
    return _change("return", order_id, reason, context)


ORDER_TOOLS = [find_customer, cancel_order, start_return, open_case]
