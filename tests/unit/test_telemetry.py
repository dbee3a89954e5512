"""One trace per job, in the GenAI conventions' shape, with no prompt text unless asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from graphs.support_triage import graph
from slmflow import JobStatus, run_job
from slmflow.checkpoints import open_checkpointer
from slmflow.testing import Reply, ScriptedServer
from tests.conftest import INVENTED_AMOUNT, TRIAGE_ALIASES, triage_endpoints, triage_reply

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    # The provider is global and set once per process (maybe by an earlier test): add our exporter to it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    yield _exporter
    _exporter.clear()


def _inventing_extractor(body: dict[str, Any]) -> Reply:
    name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
    if name == "extract_fields":
        return Reply(text=json.dumps(INVENTED_AMOUNT))
    return triage_reply(body)


async def test_job_is_one_trace_of_workflow_agents_chats_and_tools(spans: InMemorySpanExporter, ticket) -> None:
    spans.clear()
    right = {"order_id": "ORD-10012", "amount": 59.99, "email": "maria.lopez@example.com"}
    scripts = {"slm": _inventing_extractor, "llm": [Reply(text=json.dumps(right))]}
    with ScriptedServer(scripts, TRIAGE_ALIASES) as server:  # type: ignore[arg-type]
        endpoints = triage_endpoints(server, "llm")
        async with open_checkpointer("memory") as checkpointer:
            result = await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
        await endpoints.aclose()
    assert result.status == JobStatus.SUCCEEDED
    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    assert {format(s.context.trace_id, "032x") for s in finished} == {result.trace_id}
    by_id = {s.context.span_id: s for s in finished}

    def children(span: ReadableSpan) -> list[str]:
        return [
            s.name
            for s in sorted(finished, key=lambda s: s.start_time)
            if s.parent and s.parent.span_id == span.context.span_id
        ]

    [root] = [s for s in finished if s.parent is None]
    assert root.name == "invoke_workflow support_triage"
    assert root.attributes["slmflow.job_id"] == result.job_id
    assert children(root) == [
        f"invoke_agent {n}" for n in ("classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply")
    ]
    agents = {s.name.split()[1]: s for s in finished if s.name.startswith("invoke_agent")}
    assert children(agents["extract_fields"]) == ["chat slm", "chat slm", "chat llm"]
    assert children(agents["lookup_order"]) == ["chat slm", "execute_tool lookup_order"]
    extract = agents["extract_fields"]
    assert extract.attributes["slmflow.tier"] == "llm"
    assert extract.attributes["slmflow.escalation_reason"] == ("check_failed",)
    chats = [
        by_id[s.context.span_id]
        for s in finished
        if s.name.startswith("chat") and s.parent.span_id == extract.context.span_id
    ]
    first, escalated = chats[0], chats[-1]
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "slm"
    assert (first.attributes["slmflow.tier"], first.attributes["slmflow.attempt"]) == ("slm", 1)
    assert first.attributes["slmflow.verdict"] == "check_failed"
    assert first.attributes["gen_ai.usage.input_tokens"] == 20
    assert escalated.attributes["slmflow.tier"] == "llm" and escalated.attributes["slmflow.verdict"] == "ok"
    [tool] = [s for s in finished if s.name == "execute_tool lookup_order"]
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    # Content is off by default: no prompt or completion text on any span.
    for span in finished:
        for value in (span.attributes or {}).values():
            assert "maria.lopez@example.com" not in str(value) and "blanket" not in str(value)


async def test_captured_content_is_redacted(spans: InMemorySpanExporter) -> None:
    from slmflow import telemetry

    spans.clear()
    ticket = {
        "ticket_id": "T7",
        "subject": "Refund",
        "body": ("Refund ORD-10012 please, I paid with card 4242 4242 4242 4242. Reach me at maria.lopez@example.com"),
    }
    telemetry.capture_content(True)
    try:
        with ScriptedServer({"slm": triage_reply}, TRIAGE_ALIASES) as server:
            endpoints = triage_endpoints(server)
            async with open_checkpointer("memory") as checkpointer:
                await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
            await endpoints.aclose()
    finally:
        telemetry.capture_content(False)
    finished = spans.get_finished_spans()
    captured = [str(v) for s in finished for k, v in (s.attributes or {}).items() if k.startswith("gen_ai.input")]
    assert captured and any("Refund ORD-10012 please" in text for text in captured)  # content is there...
    everything = " ".join(str(v) for s in finished for v in (s.attributes or {}).values())
    assert "[email]" in everything and "[card]" in everything
    assert "maria.lopez@example.com" not in everything  # ...but never the email or the card number
    assert "4242 4242 4242 4242" not in everything and "4242424242424242" not in everything


async def test_metrics_count_calls_tokens_escalations_and_cost(ticket) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    right = {"order_id": "ORD-10012", "amount": 59.99, "email": "maria.lopez@example.com"}
    scripts = {"slm": _inventing_extractor, "llm": [Reply(text=json.dumps(right))]}
    with ScriptedServer(scripts, TRIAGE_ALIASES) as server:  # type: ignore[arg-type]
        endpoints = triage_endpoints(server, "llm")
        async with open_checkpointer("memory") as checkpointer:
            await run_job(graph, ticket, endpoints=endpoints, checkpointer=checkpointer)
        await endpoints.aclose()
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    calls = {(p.attributes["slmflow.skill"], p.attributes["slmflow.tier"], p.attributes["slmflow.verdict"]): p.value
             for p in points["slmflow.model.calls"]}  # fmt: skip
    assert calls[("extract_fields", "slm", "check_failed")] == 2
    assert calls[("extract_fields", "llm", "ok")] == 1
    [escalation] = [p for p in points["slmflow.escalations"] if p.attributes["slmflow.skill"] == "extract_fields"]
    assert escalation.attributes["slmflow.escalation_reason"] == "check_failed" and escalation.value == 1
    assert escalation.attributes["slmflow.slm_model"] == "slm"  # per adapter version
    costs = {p.attributes["slmflow.cost_kind"]: p.value for p in points["slmflow.cost"]
             if p.attributes["slmflow.skill"] == "extract_fields"}  # fmt: skip
    assert costs["actual"] > 0 and costs["all_llm"] > 0
    assert {p.attributes["gen_ai.token.type"] for p in points["gen_ai.client.token.usage"]} == {"input", "output"}
    assert any(p.attributes["gen_ai.tool.name"] == "lookup_order" for p in points["slmflow.tool.duration"])
    assert [p.attributes["slmflow.status"] for p in points["slmflow.job.duration"]] == ["succeeded"]
