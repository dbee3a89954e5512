"""Every branch of the cascade, against a scripted OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.tools import tool
from pydantic import BaseModel

from slmflow import EscalationReason, Label, Object, Skill, Tier, ToolCalls, ToolRegistry, run_skill
from slmflow.testing import Reply, ScriptedServer

LABELS = ("refund", "order_status", "other")
OPENED: list[str] = []


class Fields(BaseModel):
    order_id: str
    amount: float | None


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    if order_id == "ORD-00000":
        raise ValueError("no such order")
    return {"order_id": order_id, "status": "shipped"}


@tool
def delete_account(email: str) -> str:
    """Delete a customer's account."""
    OPENED.append(email)
    return "deleted"


TOOLS = ToolRegistry.of([lookup_order, delete_account])


def order_in_ticket(answer: Any, values: dict[str, Any]) -> list[str]:
    order_id = answer.order_id if isinstance(answer, Fields) else answer[0].arguments["order_id"]
    return [] if order_id in values["ticket"] else [f"{order_id} is not in the ticket"]


def not_other(answer: str, values: dict[str, Any]) -> list[str]:
    return ["'other' is never right for a ticket with an order id"] if answer == "other" else []


label_skill = Skill(name="classify", instructions="Classify.", prompt="{ticket}",
                    output=Label(labels=LABELS), checks=(not_other,), min_confidence=0.5)  # fmt: skip
object_skill = Skill(name="extract", instructions="Extract.", prompt="{ticket}",
                     output=Object(model=Fields), checks=(order_in_ticket,))  # fmt: skip
tool_skill = Skill(name="lookup", instructions="Look it up.", prompt="{ticket}",
                   output=ToolCalls(tools=("lookup_order",)), checks=(order_in_ticket,))  # fmt: skip
TICKET = {"ticket": "Where is ORD-12345?"}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({}) as server:
        yield server


async def run(server: ScriptedServer, skill: Skill, slm: list[Reply], llm: list[Reply] | None = None,
              timeout: float = 5.0) -> Any:  # fmt: skip
    server.scripts.update({"slm": slm, **({"llm": llm} if llm is not None else {})})
    endpoints = server.endpoints("slm", "llm" if llm is not None else None, timeout=timeout)
    try:
        return await run_skill(skill, TICKET, endpoints, tools=TOOLS)
    finally:
        await endpoints.aclose()


async def test_confident_valid_label_is_kept_on_the_slm(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(text="order_status", logprobs=[-0.05])])
    assert (result.status, result.tier, result.answer) == ("ok", Tier.SLM, "order_status")
    assert result.confidence == pytest.approx(0.951, abs=1e-3)
    assert result.escalations == []
    request = server.requests_for("slm")[0]
    assert request["structured_outputs"] == {"choice": list(LABELS)}
    assert request["temperature"] == 0 and request["logprobs"] is True


async def test_label_outside_the_set_is_invalid_output_and_retried_with_feedback(
    server: ScriptedServer,
) -> None:
    result = await run(server, label_skill, [Reply(text="refund please"), Reply(text="refund")])
    assert result.ok and result.answer == "refund"
    assert [a.reason for a in result.attempts] == [EscalationReason.INVALID_OUTPUT, None]
    retry = server.requests_for("slm")[1]["messages"][-1]["content"]
    assert "'refund please' is not one of the labels" in retry


async def test_wrong_label_fails_its_check_then_escalates_to_llm(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(text="other")], llm=[Reply(text='{"label": "refund"}')])
    assert (result.status, result.tier, result.answer) == ("ok", Tier.LLM, "refund")
    assert [a.reason for a in result.attempts[:2]] == [EscalationReason.CHECK_FAILED] * 2
    [escalation] = result.escalations
    assert (escalation.reason, escalation.to) == (EscalationReason.CHECK_FAILED, "llm")
    assert "never right" in escalation.detail
    # The LLM speaks plain OpenAI: the label set goes as a JSON schema enum, not vLLM's `choice`.
    llm_request = server.requests_for("llm")[0]
    assert "structured_outputs" not in llm_request
    assert llm_request["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == list(LABELS)


async def test_low_logprobs_escalate_with_low_confidence(server: ScriptedServer) -> None:
    unsure = Reply(text="refund", logprobs=[-1.2])  # p = 0.30 < 0.5
    result = await run(server, label_skill, [unsure], llm=[Reply(text='{"label": "refund"}', logprobs=[])])
    assert result.tier == Tier.LLM
    assert result.escalations[0].reason == EscalationReason.LOW_CONFIDENCE
    assert len(server.requests_for("slm")) == 1  # an unsure model is not asked again
    assert result.attempts[0].confidence == pytest.approx(0.301, abs=1e-3)


async def test_no_llm_configured_means_needs_review_with_every_reason(
    server: ScriptedServer,
) -> None:
    result = await run(server, label_skill, [Reply(text="bogus"), Reply(text="other")])
    assert result.status == "needs_review" and result.answer is None
    assert [a.reason for a in result.attempts] == [
        EscalationReason.INVALID_OUTPUT,
        EscalationReason.CHECK_FAILED,
    ]
    [escalation] = result.escalations
    assert (escalation.to, escalation.reason) == ("review", EscalationReason.CHECK_FAILED)


async def test_every_tier_failing_ends_in_review_after_the_llm(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(text="other")], llm=[Reply(text='{"label": "other"}')])
    assert result.status == "needs_review"
    assert [(e.from_tier, e.to) for e in result.escalations] == [
        (Tier.SLM, "llm"),
        (Tier.LLM, "review"),
    ]


async def test_invalid_json_object_is_invalid_output(server: ScriptedServer) -> None:
    good = Reply(text=json.dumps({"order_id": "ORD-12345", "amount": None}))
    result = await run(server, object_skill, [Reply(text='{"order_id": "ORD-123'), good])
    assert result.ok and result.answer == {"order_id": "ORD-12345", "amount": None}
    assert result.attempts[0].reason == EscalationReason.INVALID_OUTPUT
    assert "not valid JSON" in result.attempts[0].errors[0]
    schema = server.requests_for("slm")[0]["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["schema"]["required"] == ["order_id", "amount"]


async def test_object_off_schema_is_invalid_output(server: ScriptedServer) -> None:
    result = await run(server, object_skill, [Reply(text='{"amount": "lots"}')])
    assert result.status == "needs_review"
    assert result.attempts[0].reason == EscalationReason.INVALID_OUTPUT
    assert any(e.startswith("order_id") for e in result.attempts[0].errors)


async def test_answer_cut_off_at_max_tokens_is_invalid_output(server: ScriptedServer) -> None:
    result = await run(server, object_skill, [Reply(text='{"order_id": "OR', finish_reason="length")])
    assert result.attempts[0].reason == EscalationReason.INVALID_OUTPUT
    assert "cut off" in result.attempts[0].errors[0]


async def test_invented_value_fails_the_domain_check(server: ScriptedServer) -> None:
    result = await run(server, object_skill, [Reply(text='{"order_id": "ORD-99999", "amount": null}')])
    assert result.attempts[0].reason == EscalationReason.CHECK_FAILED
    assert "ORD-99999 is not in the ticket" in result.attempts[0].errors[0]


async def test_tool_call_is_validated_run_and_returned(server: ScriptedServer) -> None:
    result = await run(server, tool_skill, [Reply(tool_calls=[("lookup_order", {"order_id": "ORD-12345"})])])
    assert result.ok
    assert result.answer == [{"name": "lookup_order", "arguments": {"order_id": "ORD-12345"},
                              "result": {"order_id": "ORD-12345", "status": "shipped"}}]  # fmt: skip
    request = server.requests_for("slm")[0]
    assert [t["function"]["name"] for t in request["tools"]] == ["lookup_order"]
    assert request["tools"][0]["function"]["strict"] is True
    assert request["tool_choice"] == {"type": "function", "function": {"name": "lookup_order"}}


async def test_bad_tool_arguments_are_a_tool_error_and_never_run(server: ScriptedServer) -> None:
    result = await run(server, tool_skill, [Reply(tool_calls=[("lookup_order", "0")]),
                                            Reply(tool_calls=[("lookup_order", {"id": 7})])])  # fmt: skip
    assert [a.reason for a in result.attempts] == [EscalationReason.TOOL_ERROR] * 2
    assert "must be a JSON object" in result.attempts[0].errors[0]
    assert "'order_id' is a required property" in result.attempts[1].errors[0]


async def test_non_granted_tool_is_refused_and_never_run(server: ScriptedServer) -> None:
    OPENED.clear()
    call = Reply(tool_calls=[("delete_account", {"email": "a@b.c"})])
    result = await run(server, tool_skill, [call])
    assert result.status == "needs_review"
    assert result.attempts[0].reason == EscalationReason.TOOL_ERROR
    assert "not granted" in result.attempts[0].errors[0]
    assert OPENED == []


async def test_failing_tool_is_a_tool_error_fed_back(server: ScriptedServer) -> None:
    missing = Reply(tool_calls=[("lookup_order", {"order_id": "ORD-00000"})])
    ok = Reply(tool_calls=[("lookup_order", {"order_id": "ORD-12345"})])
    ticket_skill = tool_skill.model_copy(update={"checks": ()})
    result = await run(server, ticket_skill, [missing, ok])
    assert result.ok and result.attempts[0].reason == EscalationReason.TOOL_ERROR
    assert "no such order" in server.requests_for("slm")[1]["messages"][-1]["content"]


async def test_text_instead_of_a_required_call_is_invalid_output(server: ScriptedServer) -> None:
    result = await run(server, tool_skill, [Reply(text="I will look it up")])
    assert result.attempts[0].reason == EscalationReason.INVALID_OUTPUT
    assert "expected exactly 1 tool call" in result.attempts[0].errors[0]


async def test_server_error_is_retried_then_model_unavailable(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(status=503)], llm=[Reply(text='{"label": "refund"}')])
    assert result.tier == Tier.LLM
    assert result.escalations[0].reason == EscalationReason.MODEL_UNAVAILABLE
    assert len(server.requests_for("slm")) == 2  # the first try and one retry with backoff, then escalate


async def test_client_error_is_not_retried(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(status=400, text="bad request")])
    assert result.escalations[0].reason == EscalationReason.MODEL_UNAVAILABLE
    assert "answered 400: bad request" in result.escalations[0].detail
    assert len(server.requests_for("slm")) == 1


async def test_slow_model_times_out_and_escalates(server: ScriptedServer) -> None:
    slow = Reply(text="refund", delay=1.0)
    result = await run(server, label_skill, [slow], llm=[Reply(text='{"label": "refund"}')], timeout=0.3)
    assert result.tier == Tier.LLM
    assert result.escalations[0].reason == EscalationReason.TIMEOUT
    assert len(server.requests_for("slm")) == 1  # a timeout is not retried


async def test_usage_counts_calls_tokens_and_cost_per_tier(server: ScriptedServer) -> None:
    result = await run(server, label_skill, [Reply(text="other", prompt_tokens=100, completion_tokens=2)],
                       llm=[Reply(text='{"label": "refund"}', prompt_tokens=100, completion_tokens=4)])  # fmt: skip
    slm, llm = result.usage.tiers[Tier.SLM], result.usage.tiers[Tier.LLM]
    assert (slm.calls, slm.input_tokens, slm.output_tokens) == (2, 200, 4)
    assert (llm.calls, llm.input_tokens, llm.output_tokens) == (1, 100, 4)
    # Scripted prices: SLM 1/1k tokens, LLM 10/1k tokens.
    assert result.usage.cost == pytest.approx(0.204 + 1.04)
    assert result.usage.all_llm_cost == pytest.approx(1.02)


async def test_unknown_model_on_the_server_is_model_unavailable(server: ScriptedServer) -> None:
    server.scripts["other"] = [Reply(text="x")]
    skill = label_skill.model_copy(update={"model": "missing-adapter"})
    result = await run(server, skill, [Reply(text="refund")])
    assert result.escalations[0].reason == EscalationReason.MODEL_UNAVAILABLE
    assert "missing-adapter" in result.escalations[0].detail
