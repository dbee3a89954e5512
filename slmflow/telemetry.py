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

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "capture_content",
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


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def redact(text: str) -> str:
    """The default redaction hook: email addresses and card numbers never reach a span."""
    return _CARD.sub("[card]", _EMAIL.sub("[email]", text))


Redactor = Callable[[str], str]
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
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER") or (
        "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none"
    )
    if exporter_name == "none" or isinstance(trace.get_tracer_provider(), _sdk_provider_type()):
        return exporter_name != "none"
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        # The real stdout: a Celery worker has replaced sys.stdout with a logging proxy by now.
        exporter = ConsoleSpanExporter(out=sys.__stdout__ or sys.stdout)
    elif os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _sdk_provider_type() -> type:
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider


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
