"""Embedded jobs from the CLI outlive their process: approve, review and resume them by id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slmflow.testing import Reply, ScriptedServer
from tests.conftest import ROOT, order_reply
from tests.unit.test_cli import slmflow

R03 = {"request_id": "R03", "email": "omar.haddad@example.com",
       "message": "Cancel order ORD-10035 please, we no longer need the footrests."}  # fmt: skip


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return tmp_path / "shop.db"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer({"slm": order_reply}) as server:
        yield server


def _env(server: ScriptedServer, shop: Path, cache: Path) -> dict[str, str]:
    return {"SLMFLOW_SLM_BASE_URL": server.base_url, "SLMFLOW_SLM_MODEL": "slm", "SHOP_DB": str(shop),
            "SLMFLOW_CACHE_DIR": str(cache)}  # fmt: skip


def _changes(shop: Path) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(shop) as connection:
        return [tuple(r) for r in connection.execute("SELECT order_id, kind FROM changes")]


def _input(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / f"{data['request_id']}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_paused_embedded_job_is_approved_from_another_process(server, shop, tmp_path) -> None:
    env, job = _env(server, shop, tmp_path / "cache"), f"job-{uuid.uuid4().hex[:8]}"
    paused = slmflow("run", "order_change", "--input", _input(tmp_path, R03), "--job-id", job, "--json", **env)
    assert paused.returncode == 3, paused.stderr  # awaiting_approval has its own exit code
    result = json.loads(paused.stdout)
    assert result["status"] == "awaiting_approval"
    assert result["approval"]["calls"][0]["name"] == "cancel_order"
    assert result["approval"]["calls"][0]["arguments"]["order_id"] == "ORD-10035"
    assert _changes(shop) == []
    shown = slmflow("run", "order_change", "--job-id", job, **env)  # the process is gone: the job is kept
    assert shown.returncode == 3 and "slmflow approve" in shown.stdout and "cancel_order" in shown.stdout
    approved = slmflow("approve", job, "--json", **env)
    assert approved.returncode == 0, approved.stderr
    done = json.loads(approved.stdout)
    assert done["status"] == "succeeded" and done["output"]["decision"] == "done"
    assert _changes(shop) == [("ORD-10035", "cancel")]
    again = slmflow("approve", job, **env)  # nothing waits any more
    assert again.returncode == 2 and "not awaiting_approval" in again.stderr
    assert _changes(shop) == [("ORD-10035", "cancel")]
    shown = slmflow("run", "order_change", "--job-id", job, "--json", **env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"
    calls_for_r03 = len(server.requests)
    assert calls_for_r03 == 4  # classify, choose, propose, reply: the approval asked no model again


def test_a_rejection_from_the_cli_reaches_the_model(server, shop, tmp_path) -> None:
    env, job = _env(server, shop, tmp_path / "cache"), f"job-{uuid.uuid4().hex[:8]}"
    slmflow("run", "order_change", "--input", _input(tmp_path, R03), "--job-id", job, **env)
    rejected = slmflow("approve", job, "--reject", "the customer called: keep the order", "--json", **env)
    assert rejected.returncode == 3, rejected.stderr  # a new proposal waits
    assert json.loads(rejected.stdout)["approval"]["round"] == 1
    asked = [json.dumps(r["messages"]) for r in server.requests if r.get("tools")]
    assert len(asked) == 2 and "keep the order" in asked[1]
    assert _changes(shop) == []


def test_an_embedded_review_is_answered_from_another_process(server, shop, tmp_path) -> None:
    def unsure(body: dict[str, Any]) -> Reply:
        if body.get("structured_outputs", {}).get("choice") == ["cancel", "return", "other"]:
            return Reply(text="maybe")  # not a label: every attempt fails, the job waits for review
        return order_reply(body)

    server.scripts["slm"] = unsure
    env, job = _env(server, shop, tmp_path / "cache"), f"job-{uuid.uuid4().hex[:8]}"
    paused = slmflow("run", "order_change", "--input", _input(tmp_path, R03), "--job-id", job, "--json", **env)
    assert paused.returncode == 1 and json.loads(paused.stdout)["review"]["last_output"] == "maybe"
    answer = tmp_path / "answer.json"
    answer.write_text('"cancel"')
    reviewed = slmflow("review", job, "--answer", str(answer), "--json", **env)
    assert reviewed.returncode == 3, reviewed.stderr  # answered: on to the proposal, which waits
    assert json.loads(reviewed.stdout)["approval"]["calls"][0]["name"] == "cancel_order"


def test_an_interrupted_embedded_job_resumes_from_its_checkpoint(server, shop, tmp_path) -> None:
    slow = {"reply_s": 30.0}

    def slow_reply(body: dict[str, Any]) -> Reply:
        reply = order_reply(body)
        if (body.get("response_format") or {}).get("json_schema", {}).get("name") == "reply_change":
            return Reply(text=reply.text, delay=slow["reply_s"])
        return reply

    refused = {
        "request_id": "R13",
        "email": "maria.lopez@example.com",
        "message": "Please cancel my bath towels order ORD-10031.",
    }
    server.scripts["slm"] = slow_reply
    env, job = _env(server, shop, tmp_path / "cache"), f"job-{uuid.uuid4().hex[:8]}"
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_")} | env
        command = [sys.executable, "-m", "slmflow", "run", "order_change", "--input", _input(tmp_path, refused),
                   "--job-id", job]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((r.get("response_format") or {}).get("json_schema", {}).get(
                "name") == "reply_change" for r in list(server.requests)):  # fmt: skip
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)  # the process dies mid-step, after three checkpoints
        process.wait(timeout=10)
    finally:
        slow["reply_s"] = 0.0
    asked_before = len(server.requests)
    resumed = slmflow("run", "order_change", "--job-id", job, "--json", **env)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "succeeded" and result["output"]["decision"] == "refused"
    assert len(server.requests) == asked_before + 1  # only the step that was cut off asks again


def test_run_needs_an_input_or_a_kept_job(server, shop, tmp_path) -> None:
    env = _env(server, shop, tmp_path / "cache")
    done = slmflow("run", "order_change", **env)
    assert done.returncode == 2 and "--input FILE" in done.stderr
    done = slmflow("run", "order_change", "--job-id", "nope", **env)
    assert done.returncode == 2 and "is not kept here" in done.stderr
    done = slmflow("approve", "nope", "--reject", "", **env)
    assert done.returncode == 2 and "needs a reason" in done.stderr
