"""The reference job end to end on a scripted model: flow, output, usage, review, escalation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graphs.support_triage import graph
from slmflow import Event, JobStatus, Tier, run_job
from slmflow.checkpoints import open_checkpointer
from slmflow.results import Escalation
from slmflow.testing import Reply, ScriptedServer
from tests.conftest import INVENTED_AMOUNT, triage_endpoints, triage_reply

STEPS = ["classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply"]


async def _run(server: ScriptedServer, ticket: dict[str, Any], llm: str | None = None,
               checkpoint_url: str = "memory") -> tuple[Any, list[Event]]:  # fmt: skip
    events: list[Event] = []
    endpoints = triage_endpoints(server, llm)
    async with open_checkpointer(checkpoint_url) as checkpointer:
        result = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer,
                               emit=events.append)  # fmt: skip
    await endpoints.aclose()
    return result, events


async def test_ticket_runs_every_step_and_produces_the_triage(triage_server, ticket) -> None:
    result, events = await _run(triage_server, ticket)
    assert result.status == JobStatus.SUCCEEDED
    output = result.output
    assert output["intent"] == "refund_request"
    assert output["fields"] == {
        "order_id": "ORD-10012",
        "amount": 59.99,
        "email": "maria.lopez@example.com",
    }
    assert output["order"]["customer_email"] == "maria.lopez@example.com"  # from the shop database
    assert output["resolution"]["tool"] == "check_refund_eligibility"
    assert output["resolution"]["result"]["eligible"] is True
    assert "ORD-10012" in output["reply"]
    assert (result.usage.calls(Tier.SLM), result.usage.calls(Tier.LLM)) == (5, 0)
    assert result.usage.escalations == []
    assert [e.step for e in events if e.kind == "step_finished"] == STEPS
    assert events[0].kind == "job_started" and events[-1].kind == "job_finished"


async def test_ticket_without_order_id_skips_the_tool_steps(triage_server) -> None:
    def no_order(body: dict[str, Any]) -> Reply:
        name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        if name == "extract_fields":
            return Reply(text=json.dumps({"order_id": None, "amount": None, "email": None}))
        if name == "draft_reply":
            return Reply(text=json.dumps({"reply": "Hi, we reset your password link."}))
        return triage_reply(body)

    triage_server.scripts["slm"] = no_order
    ticket = {"ticket_id": "T9", "subject": "login", "body": "I cannot log in to my account."}
    result, events = await _run(triage_server, ticket)
    assert result.status == JobStatus.SUCCEEDED
    assert [e.step for e in events if e.kind == "step_finished"] == [
        "classify_intent",
        "extract_fields",
        "draft_reply",
    ]
    assert result.output["order"] is None and result.output["resolution"] is None


def _inventing_extractor(body: dict[str, Any]) -> Reply:
    name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
    if name == "extract_fields":
        return Reply(text=json.dumps(INVENTED_AMOUNT))
    return triage_reply(body)


async def test_invented_field_with_no_llm_pauses_the_job_for_review(triage_server, ticket) -> None:
    triage_server.scripts["slm"] = _inventing_extractor
    result, _ = await _run(triage_server, ticket)
    assert result.status == JobStatus.NEEDS_REVIEW and result.output is None
    assert result.review.step == "extract_fields"
    assert result.review.reasons == ["check_failed", "check_failed"]
    assert [e.reason for e in result.usage.escalations] == ["check_failed"]
    assert (result.usage.calls(Tier.SLM), result.usage.calls(Tier.LLM)) == (3, 0)


async def test_invented_field_escalates_to_the_llm_and_the_job_succeeds(triage_server, ticket) -> None:
    triage_server.scripts["slm"] = _inventing_extractor
    right = {"order_id": "ORD-10012", "amount": 59.99, "email": "maria.lopez@example.com"}
    triage_server.scripts["llm"] = [Reply(text=json.dumps(right), prompt_tokens=300, completion_tokens=30)]
    result, events = await _run(triage_server, ticket, llm="llm")
    assert result.status == JobStatus.SUCCEEDED
    assert result.output["fields"] == right
    assert (result.usage.calls(Tier.SLM), result.usage.calls(Tier.LLM)) == (6, 1)
    [escalation] = result.usage.escalations
    assert escalation == Escalation(step="extract_fields", skill="extract_fields", reason="check_failed",
                                    detail="amount 19.99 does not occur in the ticket; use null if there is none",
                                    from_tier=Tier.SLM, to="llm")  # fmt: skip
    assert [e.kind for e in events].count("skill_escalated") == 1
    assert result.usage.cost < result.usage.all_llm_cost * 5


async def test_sqlite_checkpointer_keeps_the_job_thread(triage_server, ticket, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'checkpoints.db'}"
    result, _ = await _run(triage_server, ticket, checkpoint_url=url)
    assert result.status == JobStatus.SUCCEEDED
    async with open_checkpointer(url) as checkpointer:
        saved = await checkpointer.aget_tuple({"configurable": {"thread_id": result.job_id}})
    assert saved is not None and saved.checkpoint["channel_values"]["output"] == result.output


async def test_extraction_and_tool_calls_are_narrowed_to_what_the_ticket_quotes(triage_server, ticket) -> None:
    result, _ = await _run(triage_server, ticket)
    assert result.status == JobStatus.SUCCEEDED
    bodies = triage_server.requests
    extract = next(b for b in bodies if (b.get("response_format") or {}).get("json_schema", {}).get("name")
                   == "extract_fields")  # fmt: skip
    properties = extract["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["order_id"]["enum"] == ["ORD-10012", None]
    assert properties["email"]["enum"] == ["maria.lopez@example.com", None]
    assert "enum" not in properties["amount"]
    for body in (b for b in bodies if b.get("tools")):
        for tool in body["tools"]:
            assert tool["function"]["parameters"]["properties"]["order_id"]["enum"] == ["ORD-10012"]
