"""Approval on a fleet: a proposed order change waits, is approved through the SDK or the CLI, and
runs exactly once, also when the jobs worker dies right after the approval."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from slmflow import JobAwaitingApproval, JobStatus
from slmflow.testing import ScriptedServer
from tests.conftest import ROOT, order_reply
from tests.integration.test_fleet import REDIS_URL, Fleet, Model

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

R03 = {"request_id": "R03", "email": "omar.haddad@example.com",
       "message": "Cancel order ORD-10035 please, we no longer need the footrests."}  # fmt: skip
R07 = {"request_id": "R07", "email": "maria.lopez@example.com",
       "message": "I want to return the linen throw blanket, ORD-10012, it is much too thin."}  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()  # no Redis: fail loudly, never skip
    client.close()
    with ScriptedServer({"slm": order_reply}) as server:
        fleet = Fleet(server, Model(), tmp_path / "shop.db")
        fleet.start_worker("slmflow.tools", tmp_path / "tools-worker.out")
        try:
            yield fleet
        finally:
            for process in fleet.processes:
                fleet.stop(process)
            fleet.client.close()


def changes(fleet: Fleet) -> list[tuple[str, str]]:
    with sqlite3.connect(fleet.shop_db) as connection:
        return [tuple(r) for r in connection.execute("SELECT order_id, kind FROM changes")]


def test_approved_through_the_sdk_runs_once_though_the_worker_dies_after_the_approval(fleet: Fleet) -> None:
    worker = fleet.start_jobs_worker()
    job = fleet.client.submit("order_change", R03)
    with pytest.raises(JobAwaitingApproval) as paused:
        job.result(timeout=30)
    proposed = paused.value.context["approval"]["calls"]
    assert proposed[0]["name"] == "cancel_order" and proposed[0]["arguments"]["order_id"] == "ORD-10035"
    assert job.status() == JobStatus.AWAITING_APPROVAL and changes(fleet) == []
    seen = [e.id for e in job.events(follow=False)]
    job.approve()
    for event in job.events(after=seen[-1]):
        if event.kind == "job_started":  # the approved run began: kill its worker now
            break
    fleet.stop(worker, signal.SIGKILL)
    fleet.start_jobs_worker()
    record = job.result(timeout=60)
    assert record.status == JobStatus.SUCCEEDED and record.output["decision"] == "done"
    assert changes(fleet) == [("ORD-10035", "cancel")]
    with pytest.raises(Exception, match="not awaiting_approval"):
        job.approve()


def test_approved_through_the_cli_on_a_fleet(fleet: Fleet) -> None:
    fleet.start_jobs_worker()
    job = fleet.client.submit("order_change", R07)
    with pytest.raises(JobAwaitingApproval):
        job.result(timeout=30)
    shown = subprocess.run([sys.executable, "-m", "slmflow", "result", job.id], cwd=ROOT, env=fleet.env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 3 and "start_return" in shown.stdout and "slmflow approve" in shown.stdout
    done = subprocess.run([sys.executable, "-m", "slmflow", "approve", job.id], cwd=ROOT, env=fleet.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "approved, queued to resume" in done.stdout
    record = job.result(timeout=60)
    assert record.status == JobStatus.SUCCEEDED and record.output["change"]["kind"] == "return"
    assert changes(fleet) == [("ORD-10012", "return")]
    events = [e.kind for e in job.events(follow=False)]
    assert events.count("job_finished") == 2  # the pause, then the end
    time.sleep(0.5)
    assert changes(fleet) == [("ORD-10012", "return")]
    assert json.dumps(record.output).count("ORD-10012") >= 1
