"""Tool registry, schemas checked at definition, argument validation and in-process execution."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.tools import tool

from slmflow.errors import (
    InvalidToolArguments,
    ToolFailed,
    ToolTimeout,
    UnknownTool,
    UsageError,
)
from slmflow.tools import InProcessExecutor, ToolContext, ToolRegistry, declare_tool

CONTEXT = ToolContext(job_id="job-1", step="resolve", index=0)


@tool
def refund_order(order_id: str, amount: float) -> dict[str, Any]:
    """Refund an order.

    Args:
        order_id: The order to refund.
        amount: How much to refund.
    """
    return {"order_id": order_id, "refunded": amount}


@tool
def explode(reason: str) -> str:
    """A tool that always fails."""
    raise RuntimeError(reason)


@tool
async def dawdle(seconds: float) -> str:
    """A tool that takes its time."""
    await asyncio.sleep(seconds)
    return "done"


def test_schema_comes_from_type_hints() -> None:
    spec = ToolRegistry.of([refund_order]).get("refund_order")
    assert spec.parameters["properties"]["order_id"]["type"] == "string"
    assert spec.parameters["properties"]["amount"]["type"] == "number"
    assert set(spec.parameters["required"]) == {"order_id", "amount"}
    assert spec.description.startswith("Refund an order.")


def test_openai_tool_is_strict_and_closed() -> None:
    entry = ToolRegistry.of([refund_order]).get("refund_order").openai_tool()
    assert entry["type"] == "function"
    assert entry["function"]["name"] == "refund_order"
    assert entry["function"]["strict"] is True
    assert entry["function"]["parameters"]["additionalProperties"] is False


def test_invalid_json_schema_fails_at_definition() -> None:
    with pytest.raises(UsageError, match="lookup"):
        declare_tool("lookup", "Look up.", {"properties": {"id": {"type": "no-such-type"}}})


def test_two_tools_with_one_name_are_refused() -> None:
    twin = declare_tool("refund_order", "Another refund.", {"properties": {}})
    with pytest.raises(UsageError, match="refund_order"):
        ToolRegistry.of([refund_order, twin])


def test_missing_tool_lists_registered_names() -> None:
    registry = ToolRegistry.of([refund_order, explode])
    with pytest.raises(UnknownTool, match="explode, refund_order") as caught:
        registry.get("missing")
    assert isinstance(caught.value, KeyError)
    assert "'missing'" in str(caught.value)


@pytest.mark.parametrize(
    "arguments",
    [
        "{not json",
        "[1, 2]",
        '{"order_id": "ORD-1"}',
        {"order_id": "ORD-1", "amount": "ten"},
    ],
    ids=["not-json", "not-an-object", "missing-required", "wrong-type"],
)
def test_bad_arguments_name_the_tool(arguments: Any) -> None:
    spec = ToolRegistry.of([refund_order]).get("refund_order")
    with pytest.raises(InvalidToolArguments, match="refund_order"):
        spec.validate(arguments)


def test_valid_arguments_come_back_parsed() -> None:
    spec = ToolRegistry.of([refund_order]).get("refund_order")
    assert spec.validate('{"order_id": "ORD-1", "amount": 5}') == {"order_id": "ORD-1", "amount": 5}


async def test_executor_returns_the_tool_result() -> None:
    spec = ToolRegistry.of([refund_order]).get("refund_order")
    result = await InProcessExecutor().run(spec, {"order_id": "ORD-1", "amount": 5.0}, CONTEXT)
    assert result == {"order_id": "ORD-1", "refunded": 5.0}


async def test_raising_tool_becomes_tool_failed() -> None:
    spec = ToolRegistry.of([explode]).get("explode")
    with pytest.raises(ToolFailed, match="kaboom") as caught:
        await InProcessExecutor().run(spec, {"reason": "kaboom"}, CONTEXT)
    assert caught.value.context["key"] == CONTEXT.key


async def test_slow_tool_becomes_tool_timeout() -> None:
    spec = ToolRegistry.of([dawdle], timeout=0.05).get("dawdle")
    with pytest.raises(ToolTimeout, match="dawdle"):
        await InProcessExecutor().run(spec, {"seconds": 5}, CONTEXT)


async def test_declared_tool_without_run_returns_none() -> None:
    parameters = {"properties": {"text": {"type": "string"}}}
    spec = declare_tool("answer", "The call is the answer.", parameters)
    assert spec.run is None
    assert await InProcessExecutor().run(spec, {"text": "hi"}, CONTEXT) is None


def test_tool_context_key_names_job_step_run_tier_attempt_and_index() -> None:
    assert ToolContext(job_id="job-1", step="resolve", index=2).key == "job-1:resolve:0:slm:1:2"
    context = ToolContext(job_id="job-1", step="resolve", index=0, run=7, tier="llm", attempt=2)
    assert context.key == "job-1:resolve:7:llm:2:0"
