"""An agent loop on a fleet: each pass of the looping step is its own run (its own tool key, memo
entry and events), and each tool result reaches the next prompt; a jobs worker SIGKILLed mid-loop
resumes without running a pass twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from slmflow import Client, JobStatus
from slmflow.testing import Reply, ScriptedServer
from tests.integration.test_fleet import PG_URL, REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PROJECT = Path(__file__).with_name("loop_project")


class Notes:
    """Writes note n<i> on the i-th pass (counted from the notes in the prompt); one pass can be slow."""

    def __init__(self) -> None:
        self.slow_pass: int | None = None

    def __call__(self, body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        done = prompt.count("noted n")
        return Reply(tool_calls=[("note", {"text": f"n{done}"})], delay=5.0 if done == self.slow_pass else 0.0)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ScriptedServer, Notes, dict[str, str]]]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()  # no Redis: fail loudly, never skip
    client.close()
    model = Notes()
    with ScriptedServer({"slm": model}) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"}
        env |= {"SLMFLOW_REDIS_URL": REDIS_URL, "SLMFLOW_CHECKPOINT_URL": PG_URL, "SLMFLOW_SLM_MODEL": "slm",
                "SLMFLOW_SLM_BASE_URL": server.base_url, "SLMFLOW_LEASE_TTL_S": "4",
                "SLMFLOW_PROJECT": str(PROJECT)}  # fmt: skip
        yield server, model, env


def _worker(env: dict[str, str], queues: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "slmflow", "worker", "--queues", queues, "--loglevel", "WARNING"],
                            cwd=PROJECT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_loop_on_a_fleet_feeds_each_result_forward_and_survives_a_worker_kill(fleet) -> None:
    server, model, env = fleet
    model.slow_pass = 2  # the third pass is in flight when its worker dies
    workers = [_worker(env, "slmflow.tools"), _worker(env, "slmflow.jobs")]
    try:
        with Client(redis_url=REDIS_URL) as client:
            deadline = time.monotonic() + 60
            while "notes" not in {g.name for g in client.graphs()}:
                assert time.monotonic() < deadline, "the jobs worker did not publish the loop graph"
                time.sleep(0.3)
            job = client.submit("notes", {"topic": "returns", "passes": 4})
            started = 0
            for event in job.events():
                started += event.kind == "step_started" and event.step == "write_note"
                if started == 3:
                    break
            time.sleep(0.5)
            _stop(workers[1], signal.SIGKILL)
            model.slow_pass = None
            workers[1] = _worker(env, "slmflow.jobs")
            record = job.result(timeout=90)
            events = list(job.events(follow=False))
    finally:
        for worker in workers:
            _stop(worker)
    assert record.status == JobStatus.SUCCEEDED
    notes = record.output["notes"]
    assert [n.split(" (")[0] for n in notes] == ["noted n0", "noted n1", "noted n2", "noted n3"]
    keys = [n.split(" (")[1].rstrip(")") for n in notes]
    assert len(set(keys)) == 4  # every pass its own key
    tools = [e.data.key for e in events if e.kind == "tool_called"]
    assert sorted(set(tools)) == sorted(keys) and len(tools) == len(set(tools))  # no pass's call ran twice
    prompts = [json.dumps(r["messages"]) for r in server.requests]
    assert any("noted n2" in p for p in prompts)  # the third result reached the fourth prompt
    assert [e.data.resumed for e in events if e.kind == "job_started"] == [False, True]
