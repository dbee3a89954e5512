"""The grading rules of support_triage's steps: what makes each step's answer right."""

from __future__ import annotations

import json
from typing import Any

from agents.grading import expected_tool, grade

REFUND = {"intent": "refund_request", "fields": {"order_id": "ORD-10012", "amount": 59.99, "email": None}}
STATUS = {"intent": "order_status", "fields": {"order_id": "ORD-10005", "amount": None, "email": None}}


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    return [{"name": name, "arguments": arguments}]


def test_intent_and_fields_must_equal_the_expected_ones() -> None:
    assert grade("classify_intent", "refund_request", REFUND, {})
    assert not grade("classify_intent", "return_request", REFUND, {})
    assert grade("extract_fields", {"order_id": "ORD-10012", "amount": 59.990000001, "email": None}, REFUND, {})
    assert not grade("extract_fields", {"order_id": "ORD-10012", "amount": None, "email": None}, REFUND, {})
    assert not grade("extract_fields", "ORD-10012", REFUND, {})


def test_lookup_is_one_call_with_the_expected_order_id() -> None:
    assert grade("lookup_order", call("lookup_order", order_id="ORD-10012"), REFUND, {})
    assert not grade("lookup_order", call("lookup_order", order_id="ORD-10013"), REFUND, {})
    assert not grade("lookup_order", call("lookup_order", order_id="ORD-10012") * 2, REFUND, {})


def test_resolve_calls_the_tool_the_intent_needs_with_the_order_id() -> None:
    assert expected_tool("refund_request") == "check_refund_eligibility"
    assert expected_tool("order_status") == "open_case"
    assert grade("resolve", call("check_refund_eligibility", order_id="ORD-10012"), REFUND, {})
    assert not grade("resolve", call("open_case", order_id="ORD-10012", summary="refund"), REFUND, {})
    assert grade("resolve", call("open_case", order_id="ORD-10005", summary="where is it"), STATUS, {})
    assert not grade("resolve", call("open_case", order_id="ORD-10012", summary="where is it"), STATUS, {})


def test_a_reply_is_right_when_it_agrees_with_the_resolution_and_cites_the_order() -> None:
    resolution = {"tool": "check_refund_eligibility", "result": {"eligible": True}}
    eligible = {"order_id": "ORD-10012", "email": None, "customer_email": None, "resolution": json.dumps(resolution)}
    assert grade("draft_reply", {"reply": "Hi, your refund for ORD-10012 is being processed."}, REFUND, eligible)
    assert not grade("draft_reply", {"reply": "Unfortunately we cannot refund ORD-10012."}, REFUND, eligible)
    assert not grade("draft_reply", {"reply": "Hi, your refund is being processed."}, REFUND, eligible)
    assert not grade("draft_reply", {"reply": "Hi, your refund for ORD-10012 is being"}, REFUND, eligible)
