"""`slmflow submit|status|result|events|list|cancel` against a live fleet (Redis, Postgres, two workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from slmflow.client import Client
from slmflow.testing import ScriptedServer
from tests.conftest import EXAMPLES, ROOT, TRIAGE_ALIASES, triage_reply

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own: flushed before the fleet starts
CHECKPOINT_URL = "postgresql://postgres@127.0.0.1:5432/test"
T01 = str(EXAMPLES / "t01_refund_request.json")


def _start_worker(queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "slmflow", "worker", "--queues", queue, "--loglevel", "WARNING"],
                            cwd=ROOT, env=env)  # fmt: skip


def _wait_for_graph(name: str, deadline_s: float = 60.0) -> None:
    with Client(redis_url=REDIS_URL) as client:
        deadline = time.monotonic() + deadline_s
        while name not in {g.name for g in client.graphs()}:
            assert time.monotonic() < deadline, f"no worker published {name} within {deadline_s:g}s"
            time.sleep(0.3)


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A scripted model, a jobs worker and a tools worker on their own Redis database."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    shop_db = tmp_path_factory.mktemp("fleet") / "shop.db"
    with ScriptedServer({"slm": triage_reply}, TRIAGE_ALIASES) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"}
        env.update(SLMFLOW_REDIS_URL=REDIS_URL, SLMFLOW_SLM_BASE_URL=server.base_url, SLMFLOW_SLM_MODEL="slm",
                   SLMFLOW_CHECKPOINT_URL=CHECKPOINT_URL, SHOP_DB=str(shop_db))  # fmt: skip
        workers = [_start_worker("slmflow.jobs", env), _start_worker("slmflow.tools", env)]
        try:
            _wait_for_graph("support_triage")
            yield
        finally:
            _stop(workers)


def slmflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"}
    env["SLMFLOW_REDIS_URL"] = REDIS_URL
    return subprocess.run([sys.executable, "-m", "slmflow", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def assert_user_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert done.stdout == ""


@pytest.fixture(scope="module")
def finished_job(fleet: None) -> dict[str, object]:
    """The record of ticket T01, submitted with --wait --json and run to the end."""
    done = slmflow("submit", "support_triage", "--input", T01, "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, done.stderr
    record: dict[str, object] = json.loads(done.stdout)
    return record


def test_submit_wait_json_prints_the_succeeded_record(finished_job: dict[str, object]) -> None:
    assert finished_job["status"] == "succeeded"
    assert finished_job["graph"] == "support_triage"
    assert isinstance(finished_job["output"], dict) and finished_job["output"]


def test_submit_without_wait_prints_the_job_id_and_status(fleet: None) -> None:
    done = slmflow("submit", "support_triage", "--input", T01, "--json")
    assert done.returncode == 0, done.stderr
    submitted = json.loads(done.stdout)
    assert submitted["status"] in {"queued", "running", "succeeded"} and submitted["job_id"]
    waited = slmflow("result", submitted["job_id"], "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stderr


def test_status_of_a_finished_job(finished_job: dict[str, object]) -> None:
    done = slmflow("status", str(finished_job["job_id"]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"job_id": finished_job["job_id"], "status": "succeeded"}
    human = slmflow("status", str(finished_job["job_id"]))
    assert human.returncode == 0 and "succeeded" in human.stdout


def test_result_prints_the_same_record(finished_job: dict[str, object]) -> None:
    done = slmflow("result", str(finished_job["job_id"]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == finished_job
    human = slmflow("result", str(finished_job["job_id"]))
    assert human.returncode == 0 and "succeeded" in human.stdout


def test_events_stream_from_job_started_to_job_finished(finished_job: dict[str, object]) -> None:
    done = slmflow("events", str(finished_job["job_id"]), "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    assert "step_finished" in kinds
    human = slmflow("events", str(finished_job["job_id"]))
    assert len(human.stdout.splitlines()) == len(events)
    assert "job_started" in human.stdout.splitlines()[0]


def test_events_after_an_id_resume_the_stream(finished_job: dict[str, object]) -> None:
    first = json.loads(slmflow("events", str(finished_job["job_id"]), "--json").stdout.splitlines()[0])
    rest = slmflow("events", str(finished_job["job_id"]), "--after", first["id"], "--json", "--follow")
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout.splitlines()[0])["kind"] != "job_started"


def test_list_json_holds_the_job(finished_job: dict[str, object]) -> None:
    done = slmflow("list", "--status", "succeeded", "--graph", "support_triage", "--json")
    assert done.returncode == 0, done.stderr
    assert finished_job["job_id"] in {record["job_id"] for record in json.loads(done.stdout)}
    table = slmflow("list")
    assert table.returncode == 0 and str(finished_job["job_id"]) in table.stdout


def test_cancel_of_a_finished_job_says_it_finished(finished_job: dict[str, object]) -> None:
    done = slmflow("cancel", str(finished_job["job_id"]))
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout


@pytest.mark.parametrize("command", ["status", "result", "events", "cancel"])
def test_unknown_job_id_is_one_line_and_exit_2(fleet: None, command: str) -> None:
    assert_user_error(slmflow(command, "no-such-job"), "no job 'no-such-job'")


def test_unreadable_input_file_is_a_user_error(fleet: None, tmp_path: Path) -> None:
    assert_user_error(slmflow("submit", "support_triage", "--input", str(tmp_path / "missing.json")),
                      "cannot read input file")  # fmt: skip
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_user_error(slmflow("submit", "support_triage", "--input", str(broken)), "not valid JSON")


def test_unknown_graph_names_the_served_ones(fleet: None) -> None:
    assert_user_error(slmflow("submit", "nope", "--input", T01), "no worker serves graph 'nope'", "support_triage")


def test_input_failing_the_published_schema_is_a_user_error(fleet: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ticket_id": "T1"}))
    assert_user_error(slmflow("submit", "support_triage", "--input", str(bad)), "is invalid")


def test_trace_shows_the_step_tree_and_the_backend_link(finished_job: dict[str, object]) -> None:
    job_id = str(finished_job["job_id"])
    done = slmflow("trace", job_id, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert [s["step"] for s in shown["steps"]] == [
        "classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply"]  # fmt: skip
    lookup = shown["steps"][2]
    assert lookup["tier"] == "slm" and lookup["calls"] == 1 and lookup["input_tokens"] > 0
    assert lookup["tools"][0].startswith("lookup_order (ok")
    tree = slmflow("trace", job_id)
    assert tree.returncode == 0 and "draft_reply" in tree.stdout and "tool lookup_order" in tree.stdout
