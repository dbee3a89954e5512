"""Verifiers: grounded values (numbers however written), and the reference project's step checks."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from agents.support_triage import Reply, TicketFields, fields_not_missed, reply_agrees_with_resolution
from slmflow.tools import ToolCall
from slmflow.verifiers import grounded, numbers_in


class Fields(BaseModel):
    order_id: str | None
    amount: float | None
    name: str | None = None


@pytest.mark.parametrize(("text", "value"), [
    ("paid $1,068.00 by card", 1068.0), ("€39,95 zurück", 39.95), ("1.249,00 € bezahlt", 1249.0),
    ("ORD-18663. 59.90 CHF", 59.9), ("CHF 1'200.50", 1200.5), ("1 200,50 €", 1200.5), ("12 units", 12.0),
])  # fmt: skip
def test_numbers_are_read_however_written(text: str, value: float) -> None:
    assert value in numbers_in(text)


def test_grounded_refuses_invented_values_and_accepts_quoted_ones() -> None:
    check = grounded(source="ticket")
    ticket = {"ticket": "Order ORD-10012 for Maria  Lopez, $1,068.00 paid."}
    assert list(check(Fields(order_id="ORD-10012", amount=1068.0, name="maria lopez"), ticket)) == []
    errors = list(check(Fields(order_id="ORD-99999", amount=1068.5, name="Mario"), ticket))
    assert errors == ["order_id 'ORD-99999' does not occur in the ticket; use null if there is none",
                      "amount 1068.5 does not occur in the ticket; use null if there is none",
                      "name 'Mario' does not occur in the ticket; use null if there is none"]  # fmt: skip
    assert list(check(Fields(order_id=None, amount=None), ticket)) == []  # null is always allowed
    assert list(check(Fields(order_id="ORD-1001", amount=None), ticket)) != []  # a prefix is not the value


def test_grounded_checks_tool_arguments_and_chosen_fields_only() -> None:
    check = grounded("order_id")
    calls = [ToolCall("lookup_order", {"order_id": "ORD-55555", "note": "anything"})]
    assert list(check(calls, {"ticket": "about ORD-10012"})) == [
        "lookup_order.order_id 'ORD-55555' does not occur in the input; use null if there is none"
    ]


def test_extraction_may_not_leave_out_a_stated_order_or_email() -> None:
    ticket = {"ticket": "Refund ORD-10012 please (59,90 EUR), write to maria@example.com."}
    errors = list(fields_not_missed(TicketFields(order_id=None, amount=None, email=None), ticket))
    assert errors == ["the ticket quotes the order id ORD-10012: copy it into order_id",
                      "the ticket quotes the email maria@example.com: copy it into email",
                      "the ticket states the amount 59,90 EUR: copy it into amount as a number"]  # fmt: skip
    # A bare number is not an amount: it may be a quantity.
    assert list(fields_not_missed(TicketFields(order_id=None, amount=None, email=None), {"ticket": "12 units"})) == []


ELIGIBLE = json.dumps({"tool": "check_refund_eligibility", "result": {"eligible": True, "reason": "within window"}})
INELIGIBLE = json.dumps({"tool": "check_refund_eligibility", "result": {"eligible": False, "reason": "outside"}})


def test_a_reply_refusing_an_eligible_refund_is_rejected() -> None:
    # The reply `make run` produced on T01 before this check (it also stops mid-word).
    reply = Reply(reply="Unfortunately, I'm unable to provide a refund for ORD-10012 as it's only 14 days''s")
    errors = list(reply_agrees_with_resolution(reply, {"resolution": ELIGIBLE}))
    assert any("stops mid-sentence" in e for e in errors)
    assert any("must not refuse it" in e for e in errors)


def test_a_reply_promising_an_ineligible_refund_is_rejected_and_consistent_ones_pass() -> None:
    promise = Reply(reply="Good news: your refund has been approved for ORD-10012.")
    assert any("must not promise" in e for e in reply_agrees_with_resolution(promise, {"resolution": INELIGIBLE}))
    refusal = Reply(reply="Sorry, ORD-10012 is not eligible for a refund: it is outside the return window.")
    assert list(reply_agrees_with_resolution(refusal, {"resolution": INELIGIBLE})) == []
    processed = Reply(reply="Hi Maria, your refund for ORD-10012 is being processed.\nBest regards,\nThe Shop")
    assert list(reply_agrees_with_resolution(processed, {"resolution": ELIGIBLE})) == []
    no_refund_step = Reply(reply="We opened a case for ORD-10012 and will get back to you.")
    assert list(reply_agrees_with_resolution(no_refund_step, {"resolution": "null"})) == []
