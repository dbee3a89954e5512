"""Tracing: one trace per job, every span factory in this module.

Shape (OpenTelemetry GenAI conventions, still "development"; plus `slmflow.*` attributes):

```
submit {graph}                      SDK (fleet only)
└── invoke_workflow {graph}         the job's run on a jobs worker (the root in-process)
    └── invoke_agent {skill}        one skill through the cascade
        ├── chat {model}            one model call: tier, attempt, tokens, confidence, verdict
        └── execute_tool {tool}     one tool call (on the tools worker in a fleet)
```

The W3C context crosses processes as a small dict (the job record keeps the submit's, a tool
message carries the skill's). With no tracer provider configured every span is a no-op.
Prompt and completion text are never put on spans unless `SLMFLOW_CAPTURE_CONTENT=true`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from slmflow.redaction import Redactor, redact

__all__ = [
    "capture_content",
    "record_call",
    "record_job",
    "record_skill",
    "record_tool",
    "setup_metrics",
    "carrier",
    "chat_span",
    "content",
    "current_trace_id",
    "job_span",
    "redact",
    "setup_tracing",
    "skill_span",
    "submit_span",
    "tool_span",
]

_tracer = trace.get_tracer("slmflow")
_meter = metrics.get_meter("slmflow")
_calls = _meter.create_counter("slmflow.model.calls", description="Model calls, by tier, skill and verdict")
_tokens = _meter.create_histogram("gen_ai.client.token.usage", unit="{token}", description="Tokens per model call")
_call_duration = _meter.create_histogram("gen_ai.client.operation.duration", unit="s", description="Model call time")
_escalations = _meter.create_counter("slmflow.escalations", description="Escalations, by skill and reason")
_step_duration = _meter.create_histogram("slmflow.step.duration", unit="s", description="Skill run time")
_job_duration = _meter.create_histogram("slmflow.job.duration", unit="s", description="Job run time, by status")
_tool_duration = _meter.create_histogram("slmflow.tool.duration", unit="s", description="Tool call time")
_tool_errors = _meter.create_counter("slmflow.tool.errors", description="Tool calls that failed")
_cost = _meter.create_counter("slmflow.cost", description="Estimated cost of what ran, and of an all-LLM run")
_audits = _meter.create_counter("slmflow.audits", description="Kept SLM answers the LLM also answered, by agreement")
_audit_alarms = _meter.create_counter(
    "slmflow.audit.alarms", description="Audits whose precision bound fell below target"
)


_capture: Redactor | None = None


def capture_content(enabled: bool, redactor: Redactor = redact) -> None:
    """Put prompts, completions and tool arguments on spans (through `redactor`), or not (default)."""
    global _capture
    _capture = redactor if enabled else None


def content(span: Span, name: str, value: Any) -> None:
    """Set a content attribute, redacted, only when content capture is on."""
    if _capture is not None:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        span.set_attribute(name, _capture(text))


def setup_tracing(service_name: str, *, capture: bool | None = None) -> bool:
    """Install a tracer provider from the standard `OTEL_*` variables; False when tracing is off.

    `OTEL_TRACES_EXPORTER`: `otlp` (protocol from `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`,
    the default, or `grpc`), `console`, or `none`. Unset, tracing is on only if an OTLP endpoint is.
    Content capture follows `capture` or, when None, `SLMFLOW_CAPTURE_CONTENT`.
    """
    if capture is None:
        capture = os.environ.get("SLMFLOW_CAPTURE_CONTENT", "").lower() in ("1", "true", "yes")
    capture_content(capture)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True  # already set up in this process (or by the host application)
    exporter = _exporter("traces")
    if exporter is None:
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def carrier() -> dict[str, str]:
    """The current context as W3C headers, to cross a process boundary."""
    headers: dict[str, str] = {}
    inject(headers)
    return headers


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits), or None when not tracing."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


@contextmanager
def _span(name: str, attributes: Mapping[str, Any], parent: Mapping[str, str] | None = None,
          kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:  # fmt: skip
    token = otel_context.attach(extract(dict(parent))) if parent else None
    try:
        with _tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes)) as span:
            try:
                yield span
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
    finally:
        if token is not None:
            otel_context.detach(token)


def submit_span(graph: str) -> Any:
    """The SDK's span around recording and enqueueing a job."""
    return _span(f"submit {graph}", {"slmflow.graph": graph}, kind=SpanKind.PRODUCER)


def job_span(graph: str, job_id: str, parent: Mapping[str, str] | None = None) -> Any:
    """A job's run: the root in-process, the submit's child in a fleet."""
    attributes = {"gen_ai.operation.name": "invoke_workflow", "slmflow.graph": graph, "slmflow.job_id": job_id}
    return _span(f"invoke_workflow {graph}", attributes, parent, SpanKind.CONSUMER if parent else SpanKind.INTERNAL)


def skill_span(skill: str, step: str, job_id: str) -> Any:
    """One skill run through the cascade."""
    return _span(f"invoke_agent {skill}", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": skill,
                                            "slmflow.step": step, "slmflow.job_id": job_id})  # fmt: skip


def chat_span(model: str, tier: str, attempt: int) -> Any:
    """One model call."""
    return _span(f"chat {model}", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                    "gen_ai.request.model": model, "slmflow.tier": tier, "slmflow.attempt": attempt},
                 kind=SpanKind.CLIENT)  # fmt: skip


def tool_span(tool: str, key: str, parent: Mapping[str, str] | None = None) -> Any:
    """One tool call (on the tools worker in a fleet, joined to the job's trace by `parent`)."""
    return _span(f"execute_tool {tool}", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                                           "slmflow.tool_key": key}, parent)  # fmt: skip


def record_call(skill: str, tier: str, model: str, verdict: str, input_tokens: int, output_tokens: int,
                seconds: float) -> None:  # fmt: skip
    """Metrics of one model call."""
    common = {"slmflow.skill": skill, "slmflow.tier": tier, "gen_ai.request.model": model}
    _calls.add(1, {**common, "slmflow.verdict": verdict})
    _tokens.record(input_tokens, {**common, "gen_ai.token.type": "input"})
    _tokens.record(output_tokens, {**common, "gen_ai.token.type": "output"})
    _call_duration.record(seconds, {**common, "gen_ai.operation.name": "chat"})


def record_audit(skill: str, slm_model: str, agree: bool | None, alarm: bool) -> None:
    """Metrics of one audit: whether the LLM agreed with the kept SLM answer, and any alarm it raised."""
    outcome = "unknown" if agree is None else "agree" if agree else "disagree"
    attributes = {"slmflow.skill": skill, "slmflow.slm_model": slm_model}
    _audits.add(1, {**attributes, "slmflow.audit": outcome})
    if alarm:
        _audit_alarms.add(1, attributes)


def record_skill(
    skill: str, status: str, reasons: list[str], seconds: float, cost: float, all_llm: float, slm_model: str = ""
) -> None:
    """Metrics of one skill run: its time, escalations and cost against an all-LLM run.

    Runs and escalations carry the SLM model or adapter that served the skill: the escalation rate
    of each adapter version is escalations over runs with the same `slmflow.slm_model`.
    """
    _step_duration.record(seconds, {"slmflow.skill": skill, "slmflow.status": status, "slmflow.slm_model": slm_model})
    for reason in reasons:
        _escalations.add(
            1, {"slmflow.skill": skill, "slmflow.escalation_reason": reason, "slmflow.slm_model": slm_model}
        )
    _cost.add(cost, {"slmflow.skill": skill, "slmflow.cost_kind": "actual"})
    _cost.add(all_llm, {"slmflow.skill": skill, "slmflow.cost_kind": "all_llm"})


def record_job(graph: str, status: str, seconds: float) -> None:
    """Metrics of one job run."""
    _job_duration.record(seconds, {"slmflow.graph": graph, "slmflow.status": status})


def record_tool(tool: str, seconds: float, error: str | None) -> None:
    """Metrics of one tool call."""
    _tool_duration.record(seconds, {"gen_ai.tool.name": tool})
    if error:
        _tool_errors.add(1, {"gen_ai.tool.name": tool, "error.type": error})


def setup_metrics(service_name: str) -> bool:
    """Install a meter provider from `OTEL_METRICS_EXPORTER` (`otlp`, `console`, `none`); False when off."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        return True
    exporter = _exporter("metrics")
    if exporter is None:
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])
    )
    return True


_EXPORTERS = {  # signal: (console, OTLP gRPC, OTLP HTTP)
    "traces": (
        "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
    ),
    "metrics": (
        "opentelemetry.sdk.metrics.export:ConsoleMetricExporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
    ),
}


def _exporter(signal: str) -> Any | None:
    """The exporter `OTEL_{SIGNAL}_EXPORTER` names (unset: OTLP if an endpoint is set), or None."""
    name = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER") or (
        "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none"
    )
    if name == "none":
        return None
    console, grpc, http = _EXPORTERS[signal]
    if name == "console":
        # The real stdout: a Celery worker has replaced sys.stdout with a logging proxy by now.
        return _load(console)(out=sys.__stdout__ or sys.stdout)
    grpc_wanted = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc"
    return _load(grpc if grpc_wanted else http)()


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
