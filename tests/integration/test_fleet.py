"""The fleet for real: Redis, Postgres checkpoints, jobs and tools workers as subprocesses.

The model is scripted (it answers support_triage right for ticket T01), so what is tested is the
orchestration: delivery, resumption after a SIGKILL, idempotency, cancel, review, events.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from slmflow import Client, InvalidInput, JobCancelled, JobNeedsReview, JobStarted, JobStatus, UnknownGraph
from slmflow.learning.store import DatasetStore, RunRecord
from slmflow.testing import Reply, ScriptedServer
from tests.conftest import EXAMPLES, INVENTED_AMOUNT, ROOT, TRIAGE_ALIASES, triage_reply

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/13"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
T01 = json.loads((EXAMPLES / "t01_refund_request.json").read_text())
STATUS_TICKET = {"ticket_id": "T90", "subject": "Where is it?",
                 "body": "Where is my order ORD-10012 ($59.99)? It is late. maria.lopez@example.com"}  # fmt: skip


def step_of(body: dict[str, Any]) -> str:
    """Which support_triage step a model request belongs to."""
    if "structured_outputs" in body:
        return "classify_intent"
    if body.get("response_format"):
        return str(body["response_format"]["json_schema"]["name"])
    tools = [t["function"]["name"] for t in body.get("tools", [])]
    return "lookup_order" if tools == ["lookup_order"] else "resolve"


class Model:
    """The scripted model with per-step behaviour the tests can change."""

    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        self.intent = "refund_request"
        self.invent_order = False

    def __call__(self, body: dict[str, Any]) -> Reply:
        step = step_of(body)
        delay = self.delays.get(step, 0.0)
        if step == "classify_intent":
            return Reply(text=self.intent, delay=delay)
        if step == "extract_fields" and self.invent_order:
            return Reply(text=json.dumps(INVENTED_AMOUNT))
        if step == "resolve" and self.intent != "refund_request":
            return Reply(tool_calls=[("open_case", {"order_id": "ORD-10012", "summary": "late order"})], delay=delay)
        reply = triage_reply(body)
        return Reply(text=reply.text, tool_calls=reply.tool_calls, logprobs=reply.logprobs, delay=delay)


class Fleet:
    """Workers as subprocesses of the test, all on one Redis DB, one shop database, one model."""

    def __init__(self, server: ScriptedServer, model: Model, shop_db: Path) -> None:
        self.server, self.model, self.shop_db = server, model, shop_db
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_") or k == "SLMFLOW_DATASET_URL"},
            "SLMFLOW_REDIS_URL": REDIS_URL,
            "SLMFLOW_CHECKPOINT_URL": PG_URL,
            "SLMFLOW_SLM_BASE_URL": server.base_url,
            "SLMFLOW_SLM_MODEL": "slm",
            "SLMFLOW_LEASE_TTL_S": "4",
            "SLMFLOW_HEALTH_PORT": "0",  # a test that probes a worker gives it a port of its own
            "SHOP_DB": str(shop_db),
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.client = Client(redis_url=REDIS_URL)

    def start_worker(self, queues: str, stdout: Path | None = None, *options: str) -> subprocess.Popen[bytes]:
        with (stdout or Path(os.devnull)).open("wb") as out:  # the child keeps its own copy of the fd
            process = subprocess.Popen(
                [sys.executable, "-m", "slmflow", "worker", "--queues", queues, "--loglevel", "WARNING", *options],
                cwd=ROOT, env=self.env, start_new_session=True, stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def start_jobs_worker(self, stdout: Path | None = None, *options: str) -> subprocess.Popen[bytes]:
        process = self.start_worker("slmflow.jobs", stdout, *options)
        deadline = time.monotonic() + 60
        while not {"support_triage", "order_change"} <= {g.name for g in self.client.graphs()}:
            assert time.monotonic() < deadline, "the jobs worker did not publish its graphs"
            time.sleep(0.2)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def requests_by_step(self) -> Counter[str]:
        return Counter(step_of(r) for r in self.server.requests)

    def cases(self, order_id: str) -> int:
        with sqlite3.connect(self.shop_db) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM cases WHERE order_id = ?", (order_id,)).fetchone()[0])


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.ping()  # no Redis: fail loudly, never skip
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fleet(redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    redis_client.flushdb()
    model = Model()
    with ScriptedServer({"slm": model}, TRIAGE_ALIASES) as server:
        fleet = Fleet(server, model, tmp_path / "shop.db")
        if request.node.get_closest_marker("traced"):
            # Workers print their spans (the console exporter, flushed every 100 ms) to files.
            fleet.env.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"})
        fleet.start_worker("slmflow.tools", tmp_path / "tools-worker.out")
        try:
            yield fleet
        finally:
            for process in fleet.processes:
                fleet.stop(process)
            fleet.client.close()


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if ppid(int(entry.name)) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue  # it ended meanwhile
    return found


def test_a_host_runs_several_worker_processes_and_drains_them_all(fleet: Fleet) -> None:
    host = subprocess.Popen(
        [sys.executable, "-m", "slmflow", "worker", "--queues", "slmflow.jobs", "--processes", "2", "--loglevel",
         "WARNING"], cwd=ROOT, env=fleet.env, start_new_session=True, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    fleet.processes.append(host)
    deadline = time.monotonic() + 60
    while len(workers := children_of(host.pid)) < 2 or not fleet.client.graphs():
        assert time.monotonic() < deadline and host.poll() is None, "the worker processes did not start"
        time.sleep(0.2)
    assert len(workers) == 2  # two Celery nodes, each with its own event loop and slots
    jobs = [fleet.client.submit("support_triage", T01) for _ in range(6)]
    assert all(job.result(timeout=60).status == JobStatus.SUCCEEDED for job in jobs)
    ran_on = {e.data.worker for job in jobs for e in job.events(follow=False) if isinstance(e.data, JobStarted)}
    assert ran_on and {w.rsplit(":", 1)[1] for w in ran_on if w} <= {str(pid) for pid in workers}
    fleet.stop(host)  # SIGTERM to the parent: forwarded, each child drains and exits
    assert host.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_job_from_a_process_without_project_code_runs_on_the_fleet(
    fleet: Fleet, tmp_path: Path, redis_client: redis.Redis
) -> None:
    fleet.start_jobs_worker()
    tools_worker = fleet.processes[0]
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        assert not any(importlib.util.find_spec(m) for m in ("agents", "tools", "graphs", "workers"))
        from slmflow import Client
        with Client(redis_url={REDIS_URL!r}) as client:
            job = client.submit("support_triage", {json.dumps(T01)})
            record = job.result(timeout=60)
            events = [e.model_dump(mode="json") for e in job.events(follow=False)]
        print(json.dumps({{"record": record.model_dump(mode="json"), "events": events}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    record = result["record"]
    assert record["status"] == "succeeded"
    assert record["output"]["resolution"]["result"]["eligible"] is True
    assert record["usage"]["tiers"]["slm"]["calls"] == 5 and "llm" not in record["usage"]["tiers"]
    tool_events = [e for e in result["events"] if e["kind"] == "tool_called"]
    assert [e["data"]["tool"] for e in tool_events] == ["lookup_order", "check_refund_eligibility"]
    for event in tool_events:  # ran in a process of the tools worker (a prefork child of it)
        pid = int(event["data"]["worker"].rsplit(":", 1)[1])
        assert tools_worker.pid in (pid, ppid(pid))
    # Outcomes live in the job store: neither task left a result in Celery's backend.
    assert list(redis_client.scan_iter("celery-task-meta-*")) == []


def test_sigkilled_jobs_worker_job_resumes_from_its_checkpoint_once(fleet: Fleet) -> None:
    fleet.model.intent = "order_status"  # resolve opens a case: a row written by a tool
    fleet.model.delays["draft_reply"] = 3.0
    first = fleet.start_jobs_worker()
    job = fleet.client.submit("support_triage", STATUS_TICKET)
    for event in job.events():
        if event.kind == "step_started" and event.step == "draft_reply":
            break
    time.sleep(0.5)  # the draft request is now in flight on the model
    fleet.stop(first, signal.SIGKILL)
    killed_at = time.monotonic()
    fleet.model.delays.clear()
    fleet.start_jobs_worker()
    record = job.result(timeout=45)
    recovered_in = time.monotonic() - killed_at
    print(f"job finished {recovered_in:.1f}s after its worker was SIGKILLed")
    assert record.status == JobStatus.SUCCEEDED
    assert recovered_in < 30, recovered_in
    assert record.attempts == 2
    # Steps finished before the kill were not asked again; the interrupted one was, once more.
    assert fleet.requests_by_step() == Counter({"classify_intent": 1, "extract_fields": 1, "lookup_order": 1,
                                                "resolve": 1, "draft_reply": 2})  # fmt: skip
    assert fleet.cases("ORD-10012") == 1
    started = [e for e in job.events(follow=False) if e.kind == "job_started"]
    assert [e.data.resumed for e in started] == [False, True]


def test_same_idempotency_key_from_two_processes_makes_one_job(fleet: Fleet, redis_client: redis.Redis) -> None:
    fleet.start_jobs_worker()
    script = textwrap.dedent(f"""
        import json, sys, time
        from slmflow import Client
        with Client(redis_url={REDIS_URL!r}) as client:
            time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
            print(client.submit("support_triage", {json.dumps(T01)}, idempotency_key="order-T01").id)
    """)
    at = str(time.time() + 3)
    runs = [subprocess.Popen([sys.executable, "-c", script, at], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    ids = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(ids) == 1
    [job_id] = ids
    assert fleet.client.get(job_id).result(timeout=30).status == JobStatus.SUCCEEDED
    assert fleet.requests_by_step()["classify_intent"] == 1  # enqueued once, run once
    assert redis_client.zcard("slmflow:jobs") == 1


def test_cancel_of_a_queued_job_means_it_never_runs(fleet: Fleet) -> None:
    worker = fleet.start_jobs_worker()
    fleet.stop(worker)  # the catalog outlives it for a while: submits are accepted, nobody consumes
    job = fleet.client.submit("support_triage", T01)
    assert job.status() == JobStatus.QUEUED
    assert job.cancel() == "cancelled"
    fleet.start_jobs_worker()
    time.sleep(2)
    assert job.status() == JobStatus.CANCELLED
    assert fleet.server.requests == []
    with pytest.raises(JobCancelled):
        job.result(timeout=5)


def test_cancel_of_a_running_job_stops_it(fleet: Fleet) -> None:
    fleet.model.delays["extract_fields"] = 5.0
    fleet.start_jobs_worker()
    job = fleet.client.submit("support_triage", T01)
    for event in job.events():
        if event.kind == "step_started" and event.step == "extract_fields":
            break
    assert job.cancel() == "cancelling"
    with pytest.raises(JobCancelled):
        job.result(timeout=15)
    assert [e.kind for e in job.events(follow=False)][-1] == "job_finished"
    assert fleet.requests_by_step()["lookup_order"] == 0


def test_needs_review_then_review_resumes_to_succeeded(fleet: Fleet) -> None:
    fleet.model.invent_order = True  # extraction fails its check on every try; no LLM configured
    fleet.env.update({"SLMFLOW_RECORD": "true", "SLMFLOW_DATASET_URL": PG_URL})  # the fleet's dataset store
    fleet.start_jobs_worker()
    job = fleet.client.submit("support_triage", T01)
    with pytest.raises(JobNeedsReview) as paused:
        job.result(timeout=30)
    assert paused.value.context["review"]["step"] == "extract_fields"
    asked = fleet.requests_by_step()
    job.review("refund_request")  # not a TicketFields object: refused, the step asks again
    with pytest.raises(JobNeedsReview) as refused:
        job.result(timeout=30)
    assert "Input should be a valid dictionary" in refused.value.context["review"]["review_errors"][0]
    job.review({"order_id": "ORD-10012", "amount": 59.99, "email": "maria.lopez@example.com"})
    record = job.result(timeout=30)
    assert record.status == JobStatus.SUCCEEDED
    assert record.output["fields"]["order_id"] == "ORD-10012"
    after = fleet.requests_by_step()
    # Resuming asked nothing again of the paused step or the steps before it.
    assert after["classify_intent"] == asked["classify_intent"] == 1
    assert after["extract_fields"] == asked["extract_fields"] == 2
    assert after["draft_reply"] == 1
    # The jobs worker recorded every step in Postgres, the reviewer's answer as the human source, redacted.
    store = DatasetStore(PG_URL)
    try:
        runs: dict[str, list[RunRecord]] = {
            skill: [r for r in store.runs(skill) if r.job_id == job.id]
            for skill in ("classify_intent", "extract_fields", "draft_reply")
        }
        assert [(r.source, r.status) for r in runs["classify_intent"]] == [("slm", "ok")]
        assert [(r.source, r.status) for r in runs["extract_fields"]] == [(None, "needs_review"), ("human", "ok")]
        assert runs["extract_fields"][1].answer == {"order_id": "ORD-10012", "amount": 59.99, "email": "[email]"}
        assert runs["draft_reply"][0].source == "slm"
    finally:
        store._execute("DELETE FROM slmflow_skill_runs WHERE job_id = ?", (job.id,))
        store.close()


def test_events_are_complete_ordered_and_resumable(fleet: Fleet) -> None:
    fleet.start_jobs_worker()
    job = fleet.client.submit("support_triage", T01)
    job.result(timeout=30)
    events = list(job.events(follow=False))
    kinds = [e.kind for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    steps = [e.step for e in events if e.kind == "step_finished"]
    assert steps == ["classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply"]
    assert kinds.count("tool_called") == 2
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    middle = ids[len(ids) // 2]
    assert [e.id for e in job.events(after=middle, follow=False)] == ids[len(ids) // 2 + 1 :]


def test_bad_input_to_submit_writes_and_enqueues_nothing(fleet: Fleet, redis_client: redis.Redis) -> None:
    fleet.start_jobs_worker()
    keys_before = set(redis_client.keys("slmflow:*"))
    queued_before = redis_client.llen("slmflow.jobs")
    with pytest.raises(InvalidInput, match="body"):
        fleet.client.submit("support_triage", {"ticket_id": "T1", "subject": "hi"})
    with pytest.raises(InvalidInput, match="body"):
        fleet.client.submit("support_triage", {**T01, "body": 42})
    with pytest.raises(UnknownGraph, match="slmflow worker"):
        fleet.client.submit("no_such_graph", T01)
    assert set(redis_client.keys("slmflow:*")) - keys_before <= {k for k in redis_client.keys("slmflow:catalog:*")}
    assert redis_client.llen("slmflow.jobs") == queued_before
    assert fleet.client.list() == []


def test_a_job_that_keeps_killing_workers_is_dead_lettered(fleet: Fleet, redis_client: redis.Redis) -> None:
    fleet.start_jobs_worker()
    job = fleet.client.submit("support_triage", T01)
    job.result(timeout=30)
    # Pretend this job already took down three workers, then deliver it once more.
    from slmflow.outcomes import JobRecord

    record = JobRecord(job_id="deadbeef", graph="support_triage", input=T01)
    redis_client.hset("slmflow:job:deadbeef", mapping={"status": "queued", "data": record.model_dump_json()})
    redis_client.set("slmflow:stalls:deadbeef", 3)
    fleet.client._client.enqueue("deadbeef")
    with pytest.raises(Exception, match="dead-lettered"):
        fleet.client.get("deadbeef").result(timeout=20)


def _printed_spans(path: Path) -> list[dict[str, Any]]:
    """The spans a worker's console exporter printed (JSON objects among other output)."""
    text, decoder, spans, index = path.read_text(), json.JSONDecoder(), [], 0
    while (index := text.find('{\n    "name"', index)) != -1:
        span, index = decoder.raw_decode(text, index)
        spans.append(span)
    return spans


@pytest.mark.traced
def test_a_job_is_one_trace_from_the_sdk_through_both_workers(fleet: Fleet, tmp_path: Path) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fleet.start_jobs_worker(tmp_path / "jobs-worker.out")
    job = fleet.client.submit("support_triage", T01)
    record = job.result(timeout=60)
    [submit] = [s for s in exporter.get_finished_spans() if s.name == "submit support_triage"]
    trace_id = f"0x{submit.context.trace_id:032x}"
    assert record.trace_id == trace_id[2:]
    time.sleep(1.5)  # the workers' exporters flush every 100 ms
    jobs_spans = _printed_spans(tmp_path / "jobs-worker.out")
    tool_spans = _printed_spans(tmp_path / "tools-worker.out")
    assert {s["context"]["trace_id"] for s in jobs_spans + tool_spans} == {trace_id}
    [workflow] = [s for s in jobs_spans if s["name"] == "invoke_workflow support_triage"]
    assert workflow["parent_id"] == f"0x{submit.context.span_id:016x}"
    agents = {s["context"]["span_id"]: s["name"] for s in jobs_spans if s["name"].startswith("invoke_agent")}
    steps = ("classify_intent", "extract_fields", "lookup_order", "resolve", "draft_reply")
    assert sorted(agents.values()) == sorted(f"invoke_agent {step}" for step in steps)
    tools = {s["name"]: agents[s["parent_id"]] for s in tool_spans}
    assert tools == {"execute_tool lookup_order": "invoke_agent lookup_order",
                     "execute_tool check_refund_eligibility": "invoke_agent resolve"}  # fmt: skip


def test_a_recorded_job_whose_message_never_left_is_published_by_the_reconciler(fleet: Fleet) -> None:
    # A submit that crashed between writing the record and publishing (or a message kombu lost
    # between popping and recording it): the record is queued and active, no message exists.
    fleet.env["SLMFLOW_RECONCILE_AFTER_S"] = "1"
    fleet.start_jobs_worker()
    from slmflow.fleet.store import JobStore
    from slmflow.outcomes import JobRecord

    async def record_only() -> None:
        store = JobStore(REDIS_URL, reconcile_after_s=1)
        await store.create(JobRecord(job_id="stranded", graph="support_triage", input=T01), None)
        await store.aclose()

    fleet.client._runner.run(record_only())
    record = fleet.client.get("stranded").result(timeout=30)
    assert record.status == JobStatus.SUCCEEDED
    started = [e for e in fleet.client.get("stranded").events(follow=False) if e.kind == "job_started"]
    assert len(started) == 1


def test_a_submit_whose_publish_fails_is_accepted_and_run_by_the_reconciler(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis went away between writing the record and publishing its message (kombu raises its own
    # OperationalError): the job is recorded, so submit returns it and the reconciler publishes it.
    from kombu.exceptions import OperationalError

    fleet.env["SLMFLOW_RECONCILE_AFTER_S"] = "1"
    fleet.start_jobs_worker()

    def broken_send_task(*args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(fleet.client._client._app, "send_task", broken_send_task)
    job = fleet.client.submit("support_triage", T01, idempotency_key="publish-failed")
    monkeypatch.undo()
    assert job.result(timeout=30).status == JobStatus.SUCCEEDED
    assert fleet.client.submit("support_triage", T01, idempotency_key="publish-failed").id == job.id


def test_a_forged_run_tool_message_runs_nothing(fleet: Fleet, redis_client: redis.Redis) -> None:
    fleet.model.intent = "order_status"  # resolve opens a case: a row written by a tool
    fleet.start_jobs_worker()
    first = fleet.client.submit("support_triage", STATUS_TICKET)
    assert first.result(timeout=60).status == JobStatus.SUCCEEDED
    assert fleet.cases("ORD-10012") == 1
    app = fleet.client._client._app
    forged = {"tool": "open_case", "arguments": {"order_id": "ORD-10012", "summary": "forged"},
              "key": "nosuchjob:resolve:0", "job_id": "nosuchjob", "step": "resolve"}  # fmt: skip
    app.send_task("slmflow.run_tool", kwargs=forged, queue="slmflow.tools")
    app.send_task("slmflow.run_tool", kwargs={"key": "nosuchjob:resolve:3:slm:1:0"}, queue="slmflow.tools")
    # The finished job's own call, replayed: recorded, but its job is not running: nothing runs.
    [key] = [e.data.key for e in first.events(follow=False) if e.kind == "tool_called" and ":resolve:" in e.data.key]
    app.send_task("slmflow.run_tool", kwargs={"key": key}, queue="slmflow.tools")
    # A normal job still runs after them (the tools worker survived them), and only its case is new.
    second = fleet.client.submit("support_triage", STATUS_TICKET | {"ticket_id": "T91"})
    assert second.result(timeout=60).status == JobStatus.SUCCEEDED
    assert fleet.cases("ORD-10012") == 2
    assert redis_client.llen("slmflow.tools") == 0


def test_every_ending_emits_job_finished(fleet: Fleet, redis_client: redis.Redis) -> None:
    fleet.start_jobs_worker()
    from slmflow.outcomes import JobRecord

    record = JobRecord(job_id="deadletter", graph="support_triage", input=T01)
    redis_client.hset("slmflow:job:deadletter", mapping={"status": "queued", "data": record.model_dump_json()})
    redis_client.set("slmflow:stalls:deadletter", 3)
    fleet.client._client.enqueue("deadletter")
    with pytest.raises(Exception, match="dead-lettered"):
        fleet.client.get("deadletter").result(timeout=20)
    kinds = [e.kind for e in fleet.client.get("deadletter").events(follow=False)]
    assert kinds == ["job_finished"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_demand_counts_reserved_and_running_jobs_the_queue_list_does_not(
    fleet: Fleet, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The autoscaler's metric is exact: five running jobs read 5 while Celery's list reads 0, then 0."""
    fleet.model.delays["classify_intent"] = 4.0
    health, exporter_port = free_port(), free_port()
    fleet.start_jobs_worker(None, "--concurrency", "8", "--health-port", str(health))
    with (tmp_path / "metrics.err").open("wb") as err:
        exporter = subprocess.Popen(
            [sys.executable, "-m", "slmflow", "metrics", "--port", str(exporter_port)], cwd=ROOT, env=fleet.env,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    fleet.processes.append(exporter)
    worker = f"http://127.0.0.1:{health}"
    assert wait_for(lambda: get(f"{worker}/readyz")[0] == 200, "the jobs worker's readiness")
    assert get(f"{worker}/livez")[0] == 200

    def demand() -> dict[str, Any]:
        status, body = get(f"http://127.0.0.1:{exporter_port}/metrics.json")
        assert status == 200, body
        return dict(json.loads(body))

    assert wait_for(lambda: demand()["workers"]["slots"] == 8, "the jobs worker's slots") is True
    jobs = [fleet.client.submit("support_triage", T01) for _ in range(5)]
    running = wait_for(lambda: (d := demand())["jobs"]["running"] == 5 and d, "five jobs running")
    assert running["jobs"] == {**running["jobs"], "queued": 0, "active": 5}
    assert running["queues"]["slmflow.jobs"] == 0 == redis_client.llen("slmflow.jobs")  # what a list scaler sees
    assert running["demand"] == round(5 / 8, 3) and running["workers"]["jobs"] == 1
    assert running["jobs"]["oldest_age_s"] > 0
    text = get(f"http://127.0.0.1:{exporter_port}/metrics")[1].decode()
    assert "slmflow_jobs_active 5.0" in text and "slmflow_jobs_slots 8.0" in text
    worker_text = get(f"{worker}/metrics")[1].decode()
    assert 'slmflow_worker_running_jobs{kind="jobs"} 5.0' in worker_text
    assert 'slmflow_worker_slots{kind="jobs"} 8.0' in worker_text
    for job in jobs:
        assert job.result(timeout=60).status == JobStatus.SUCCEEDED
    ended = wait_for(lambda: (d := demand())["jobs"]["active"] == 0 and d, "the demand back to 0")
    assert ended["jobs"]["running"] == 0 and ended["demand"] == 0.0
    worker_text = get(f"{worker}/metrics")[1].decode()
    assert 'slmflow_skill_calls_total{skill="classify_intent",status="ok",tier="slm"} 5.0' in worker_text
    assert 'slmflow_worker_running_jobs{kind="jobs"} 0.0' in worker_text
    # Seconds later, still live: the heartbeat ticks (a silent one turns /livez 503 after 3 s).
    assert json.loads(get(f"{worker}/livez")[1]) == {"live": True, "reason": "ok"}


def test_a_worker_with_a_taken_health_port_runs_on_and_says_why(fleet: Fleet, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        taken.listen()
        log = tmp_path / "jobs.out"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "slmflow", "worker", "--health-port", str(port)], cwd=ROOT, env=fleet.env,
                start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        fleet.processes.append(process)
        wait_for(lambda: "support_triage" in {g.name for g in fleet.client.graphs()}, "the graphs", 60)
        assert fleet.client.submit("support_triage", T01).result(timeout=60).status == JobStatus.SUCCEEDED
    assert f"no health endpoint: port {port}" in log.read_text()
