"""The order_change job end to end on a scripted model: narrowing, approval, refusals, hand-overs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from graphs.order_change import graph
from slmflow import JobStatus, run_job
from slmflow.checkpoints import open_checkpointer
from slmflow.cli import app
from slmflow.jobs import NO_RESUME
from slmflow.learning.evaluate import matches, outcome
from slmflow.testing import ScriptedServer
from tests.conftest import ORDER_CASES, order_reply
from tools.shop import connect

CASES = list(ORDER_CASES.values())


@pytest.fixture(autouse=True)
def _fresh_shop(tmp_path, monkeypatch) -> None:
    """Each test on its own shop database: an approved cancellation changes what the policy allows."""
    monkeypatch.setenv("SHOP_DB", str(tmp_path / "shop.db"))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({"slm": order_reply}) as server:
        yield server


def _changes(order_id: str) -> list[tuple[str, str]]:
    with connect() as connection:
        rows = connection.execute("SELECT kind, request_key FROM changes WHERE order_id = ?", (order_id,)).fetchall()
    return [(r[0], r[1]) for r in rows]


async def _run(server: ScriptedServer, data: dict[str, Any], saver: Any, job_id: str, resume: Any = NO_RESUME) -> Any:
    endpoints = server.endpoints("slm")
    try:
        return await run_job(graph, data, endpoints=endpoints, checkpointer=saver, job_id=job_id, resume=resume)
    finally:
        await endpoints.aclose()


@pytest.mark.parametrize("case", CASES, ids=[c["input"]["request_id"] for c in CASES])
async def test_every_sample_request_reaches_its_expected_decision(server, case) -> None:
    async with open_checkpointer("memory") as saver:
        result = await _run(server, case["input"], saver, f"oc-{case['input']['request_id']}")
    assert matches(case["expected"], outcome(result)), (result.status, result.output, result.approval)
    if case["kind"] == "approve":
        assert result.status == JobStatus.AWAITING_APPROVAL
    else:
        assert result.status == JobStatus.SUCCEEDED
        assert result.output["decision"] == case["expected"]["decision"]


async def test_narrowing_offers_the_model_only_the_customers_orders(server) -> None:
    case = ORDER_CASES["Please cancel my weighted blanket order ORD-10036, I ordered it by mistake."]
    async with open_checkpointer("memory") as saver:
        await _run(server, case["input"], saver, "oc-narrow")
    choose = [r for r in server.requests if (r.get("response_format") or {}).get("json_schema", {}).get("name")
              == "choose_order"]  # fmt: skip
    schema = choose[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["order_id"]["enum"] == ["ORD-10017", "ORD-10024", "ORD-10036"]  # Grace Kim's
    propose = [r for r in server.requests if r.get("tools")]
    enums = {t["function"]["name"]: t["function"]["parameters"]["properties"]["order_id"]["enum"]
             for t in propose[0]["tools"]}  # fmt: skip
    assert enums == {"cancel_order": ["ORD-10036"], "start_return": ["ORD-10036"]}


async def test_an_approved_cancellation_runs_once_and_the_reply_says_it_is_done(server) -> None:
    case = ORDER_CASES["Cancel order ORD-10035 please, we no longer need the footrests."]
    async with open_checkpointer("memory") as saver:
        paused = await _run(server, case["input"], saver, "oc-approve")
        assert paused.status == JobStatus.AWAITING_APPROVAL and _changes("ORD-10035") == []
        shown = paused.approval.shown()
        done = await _run(server, case["input"], saver, "oc-approve", resume={"approve": True, "calls": shown})
        await _run(server, case["input"], saver, "oc-approve", resume={"approve": True, "calls": shown})
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.output["decision"] == "done" and done.output["change"]["kind"] == "cancel"
    assert _changes("ORD-10035") == [("cancel", "oc-approve:propose_change:5:approved:1:0")]
    with connect() as connection:
        (status,) = connection.execute("SELECT status FROM orders WHERE id = 'ORD-10035'").fetchone()
    assert status == "cancelled"
    assert "ORD-10035" in done.output["reply"]


async def test_a_request_quoting_someone_elses_order_is_handed_over_untouched(server) -> None:
    case = ORDER_CASES["Cancel ORD-10036 please."]  # Hannah Schmidt writes about Grace Kim's order
    async with open_checkpointer("memory") as saver:
        result = await _run(server, case["input"], saver, "oc-other")
    assert result.status == JobStatus.SUCCEEDED and result.output["decision"] == "handed_over"
    assert "choose_order" in result.output["why"]
    assert [e.reason for e in result.usage.escalations] == ["check_failed"]
    assert _changes("ORD-10036") == []
    calls = [r for r in server.requests if r.get("tools")]
    assert calls == []  # no change was even proposed


def test_eval_scores_the_graph_on_the_samples(server, monkeypatch) -> None:
    monkeypatch.setenv("SLMFLOW_SLM_BASE_URL", server.base_url)
    monkeypatch.setenv("SLMFLOW_SLM_MODEL", "slm")
    report = CliRunner().invoke(app, ["eval", "order_change", "--data", "examples/order_change/cases.jsonl", "--json"])
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.stdout)["reports"]
    assert row["cases"] == 24 and row["accuracy"] == 1.0 and row["accepted_wrong"] == 0, row
    assert row["reasons"] == {"check_failed": 1}  # R24 quotes another customer's order: handed over
