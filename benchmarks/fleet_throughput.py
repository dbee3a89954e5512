"""Fleet throughput: N two-step jobs through a real fleet, against a bare asyncio loop doing the same calls.

    python benchmarks/fleet_throughput.py [--jobs 1000] [--delay-ms 0] [--concurrency 200]
        [--out benchmarks/results/fleet_throughput.json]

The fleet: one jobs worker and one tools worker (`python -m slmflow worker`, as subprocesses, their
logs under /tmp), Redis (a dedicated DB, flushed first) and Postgres checkpoints, serving the graph
`bench_small` of `benchmarks/fleet_project` (a yes/no label step, then a step calling one tool).
The model is a `slmflow.testing.ScriptedServer` answering every request after `--delay-ms`; it runs
in a subprocess of its own (started by this script with `--serve`), so that neither load generator
shares a GIL with it. The jobs worker gets `--concurrency` slots, the same bound the baseline has.

1. slmflow: after a few warm-up jobs, `AsyncClient.submit` N jobs as fast as it goes, then wait for
   them all (a Lua script counts the ended jobs inside Redis every 0.2 s, instead of N `result()`
   pollers: the driver shares 2 cores with the fleet). Latency = finished_at - created_at of each job record;
   jobs/s = N / (last finished - first created). Jobs in flight: the leases held among the
   active jobs, sampled every 0.2 s, and exactly, as the most overlapping [started_at, finished_at].
2. bare: N "jobs" on one asyncio loop, each the same 2 sequential chat-completion POSTs (bodies
   built by slmflow's own `render_messages` and `constraint`, checked equal to those the workers
   sent), at most `--concurrency` at once (an `asyncio.Semaphore`), through each `--bare-clients`:
   `aiohttp` (one `ClientSession`), `openai` (one `AsyncOpenAI`, what the workers use) or `httpx`
   (one `AsyncClient`). The ratio is slmflow's jobs/s over the first client's.

Also recorded: CPU seconds of every process involved (driver, model server, each worker with its
children, Redis, Postgres), the share of the machine's cores busy (anyone's processes), listen-queue
overflows, load averages, and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "benchmarks" / "fleet_project"
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(PROJECT))

import redis  # noqa: E402

from slmflow import AsyncClient  # noqa: E402
from slmflow.fleet import keys  # noqa: E402
from slmflow.fleet.queues import JOBS_QUEUE, TOOLS_QUEUE  # noqa: E402
from slmflow.outcomes import JobRecord  # noqa: E402
from slmflow.prompts import render_messages  # noqa: E402
from slmflow.testing import Reply, ScriptedServer  # noqa: E402
from slmflow.verdicts import constraint  # noqa: E402

GRAPH = "bench_small"
MODEL = "slm"
TICKS = os.sysconf("SC_CLK_TCK")


def text_of(i: int) -> str:
    """The input text of job `i` (the number lets a request body be traced back to its job)."""
    return f"ticket {i}: can you call me back about my order?"


# -- the model server (a subprocess: `--serve`) --------------------------------------------------


def kind_of(body: dict[str, Any]) -> str:
    """Which step a model request belongs to: the label step carries `structured_outputs`."""
    return "label" if "structured_outputs" in body else "tool"


def serve(delay_s: float, backlog: int) -> None:
    """Run the scripted model until stdin closes; `stats` on stdin prints and resets what it saw."""

    def script(body: dict[str, Any]) -> Reply:
        if kind_of(body) == "label":
            return Reply(text="yes", delay=delay_s)
        return Reply(tool_calls=[("record", {"note": "x"})], delay=delay_s)

    # socketserver listens with a backlog of 5: hundreds of simultaneous connects would overflow it
    # and wait out a SYN retransmit (1 s). The measured overflows are reported either way.
    ThreadingHTTPServer.request_queue_size = backlog
    server = ScriptedServer({MODEL: script})
    server.start()
    print(json.dumps({"base_url": server.base_url, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            seen, server.requests = server.requests, []
            samples: dict[str, dict[str, Any]] = {}
            for body in seen:
                samples.setdefault(kind_of(body), body)
            print(json.dumps({"requests": dict(Counter(kind_of(b) for b in seen)), "samples": samples}), flush=True)
    server.stop()


class ModelServer:
    """The `--serve` subprocess, driven over its stdin/stdout."""

    def __init__(self, delay_s: float, backlog: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--delay-ms", str(delay_s * 1000), "--backlog", str(backlog)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdin is not None
        hello = json.loads(self.process.stdout.readline())
        self.base_url: str = hello["base_url"]
        self.pid: int = hello["pid"]

    def stats(self) -> dict[str, Any]:
        """Requests seen since the last call, by kind, with the first body of each kind."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        """Close its stdin (it exits), or terminate it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.process)


# -- measuring processes and the machine ----------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    return [name, *text.rsplit(")", 1)[1].split()]


def _all_stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            stats[int(entry)] = stat
    return stats


def _cpu(stat: list[str]) -> float:
    # After the name: [1] state, [2] ppid, ... [12] utime, [13] stime (fields 14 and 15 of stat(5)).
    return (int(stat[12]) + int(stat[13])) / TICKS


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process with its live descendants, of Redis and Postgres."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(int(stat[2]), []).append(pid)
    out = {}
    for name, root in pids.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                total += _cpu(stats[pid])
            todo.extend(children.get(pid, []))
        out[name] = total
    out["redis-server (all DBs)"] = sum(_cpu(s) for s in stats.values() if s[0] == "redis-server")
    out["postgres (all)"] = sum(_cpu(s) for s in stats.values() if s[0] == "postgres")
    out["this driver"] = time.process_time()
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two snapshots."""
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / TICKS, total / TICKS


def busy(before: tuple[float, float], after: tuple[float, float], ours: dict[str, float]) -> dict[str, float]:
    """Between two `machine_busy` readings: the share of all cores' time busy (0..1), and the CPU
    seconds spent by processes other than those in `ours` (other people's work on the machine)."""
    spent = after[0] - before[0]
    return {
        "cores_busy": round(spent / max(after[1] - before[1], 1e-9), 3),
        "others_cpu_s": round(spent - sum(ours.values()), 2),
    }


def listen_overflows() -> dict[str, int]:
    """The kernel's ListenOverflows and ListenDrops counters (connects a full backlog turned away)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            table = dict(zip(header.split()[1:], map(int, values.split()[1:]), strict=True))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}


def uptime() -> str:
    """`uptime`'s line."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def machine() -> dict[str, Any]:
    """Facts about the machine and the software measured."""
    versions = {}
    for name in ("slmflow", "celery", "kombu", "redis", "openai", "httpx", "httpcore", "httpx2", "httpcore2", "aiohttp",
                 "langgraph",
                 "langgraph-checkpoint-postgres", "psycopg"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())  # fmt: skip
    sources = sorted((ROOT / "slmflow").rglob("*.py"))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"{source.relative_to(ROOT)}\0".encode() + source.read_bytes())
    newest = max(source.stat().st_mtime for source in sources)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "slmflow_source": {  # what was measured: the tree changes, and this script runs no git
            "sha256": digest.hexdigest()[:16],
            "files": len(sources),
            "newest_mtime": datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds"),
        },
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


# -- statistics ------------------------------------------------------------------------------------


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p95, mean and max of durations in seconds, in milliseconds."""
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {
        "p50": round(cuts[49] * 1000, 1),
        "p95": round(cuts[94] * 1000, 1),
        "mean": round(statistics.fmean(values) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted(e for start, end in intervals for e in ((start, 1), (end, -1)))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# -- slmflow on the fleet ------------------------------------------------------------------------


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group (started with start_new_session), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Fleet:
    """One jobs worker and one tools worker, as subprocesses in process groups of their own."""

    def __init__(self, args: argparse.Namespace, base_url: str, logs: Path) -> None:
        self.args, self.logs = args, logs
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SLMFLOW_")},
            "SLMFLOW_REDIS_URL": args.redis_url,
            "SLMFLOW_CHECKPOINT_URL": args.checkpoint_url,
            "SLMFLOW_SLM_BASE_URL": base_url,
            "SLMFLOW_SLM_MODEL": MODEL,
            "SLMFLOW_PROJECT": str(PROJECT),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, queues: str, *options: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "slmflow", "worker", "--queues", queues, "--loglevel", self.args.loglevel,
             *options],
            cwd=ROOT, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)


async def wait_for_graph(client: AsyncClient, fleet: Fleet, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(g.name == GRAPH for g in await client.graphs()):
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the jobs worker did not publish {GRAPH} within {timeout:g}s")
        await asyncio.sleep(0.2)


async def submit_all(client: AsyncClient, texts: list[str], concurrency: int) -> list[str]:
    """Submit every text, `concurrency` submits at a time (each is a few Redis round trips)."""
    ids: list[str] = [""] * len(texts)
    cursor = iter(range(len(texts)))

    async def submitter() -> None:
        for i in cursor:
            ids[i] = (await client.submit(GRAPH, {"text": texts[i]})).id

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return ids


# Counts, inside Redis, how many of the jobs (KEYS) have ended: the driver parses one integer per poll.
_COUNT_ENDED = """
local n = 0
for _, key in ipairs(KEYS) do
  local status = redis.call('HGET', key, 'status')
  if status == 'succeeded' or status == 'failed' or status == 'cancelled' or status == 'needs_review' then
    n = n + 1
  end
end
return n
"""


async def wait_ended(r: Any, ids: list[str], fleet: Fleet, timeout: float, every: float = 0.2) -> None:
    """Until every job has ended: one server-side count of the ended jobs per `every` s."""
    count_ended = r.register_script(_COUNT_ENDED)
    keys = [f"slmflow:job:{job_id}" for job_id in ids]
    deadline = time.monotonic() + timeout
    while (ended := int(await count_ended(keys=keys))) < len(ids):
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - ended} of {len(ids)} jobs still unfinished after {timeout:g}s")
        await asyncio.sleep(every)


# Leases held among the active jobs: jobs running on a worker right now (one script, inside Redis).
_RUNNING = """
local held = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  held = held + redis.call('EXISTS', ARGV[1] .. id)
end
return held
"""


async def sample_in_flight(r: Any, samples: list[dict[str, Any]], t0: float, every: float = 0.2) -> None:
    """Every `every` s: leases held (jobs running on a worker) and the queues' lengths."""
    while True:
        async with r.pipeline(transaction=False) as pipe:
            pipe.eval(_RUNNING, 1, keys.ACTIVE, keys.lease(""))
            pipe.llen(JOBS_QUEUE)
            pipe.llen(TOOLS_QUEUE)
            running, queued_jobs, queued_tools = await pipe.execute()
        samples.append({"t": round(time.time() - t0, 2), "running": running, "jobs_queue": queued_jobs,
                        "tools_queue": queued_tools})  # fmt: skip
        await asyncio.sleep(every)


def start_py_spy(out: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the GIL holder of `pid` at 200 Hz until stopped (then it writes `out`)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "--pid", str(pid), "--gil", "--rate", "200", "--format", "raw",
               "--output", str(out), "--nonblocking", "--full-filenames"]  # fmt: skip
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)


def stop_py_spy(process: subprocess.Popen[bytes]) -> None:
    """Ask py-spy to stop and write its profile (SIGINT), then wait for it."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def fetch_records(client: AsyncClient, ids: list[str]) -> list[JobRecord]:
    records: list[JobRecord] = []
    for start in range(0, len(ids), 100):
        records += await asyncio.gather(*(client.store.get(job_id) for job_id in ids[start : start + 100]))
    return records


async def run_slmflow(args: argparse.Namespace, server: ModelServer, logs: Path) -> dict[str, Any]:
    sync_redis = redis.Redis.from_url(args.redis_url)
    sync_redis.flushdb()
    sync_redis.close()
    fleet = Fleet(args, server.base_url, logs)
    fleet.start("tools_worker", TOOLS_QUEUE)
    processes = ("--processes", str(args.jobs_processes)) if args.jobs_processes != 1 else ()
    fleet.start("jobs_worker", JOBS_QUEUE, "--concurrency", str(args.worker_concurrency), *processes)
    try:
        async with AsyncClient(redis_url=args.redis_url) as client:
            await wait_for_graph(client, fleet)
            # Warm-up: both workers up, pools and checkpoint tables ready, code paths imported.
            warm = await submit_all(client, [text_of(-1 - i) for i in range(args.warmup)], 4)
            await wait_ended(client.store.redis, warm, fleet, 120)
            warm_records = await fetch_records(client, warm)
            bad = [r for r in warm_records if r.status != "succeeded"]
            if bad:
                first = bad[0]
                raise RuntimeError(f"warm-up job {first.job_id} ended {first.status}: {first.error or first.review}")
            server.stats()  # forget the warm-up's requests
            pids = {"model server": server.pid, **{n: p.pid for n, p in fleet.processes.items()}}
            cpu_before, net_before, busy_before = cpu_seconds(pids), listen_overflows(), machine_busy()

            samples: list[dict[str, Any]] = []
            profiler = start_py_spy(args.py_spy, fleet.processes["jobs_worker"].pid) if args.py_spy else None
            t0 = time.time()
            sampler = asyncio.create_task(sample_in_flight(client.store.redis, samples, t0))
            texts = [text_of(i) for i in range(args.jobs)]
            submit_started = time.perf_counter()
            ids = await submit_all(client, texts, args.submit_concurrency)
            submit_s = time.perf_counter() - submit_started
            await wait_ended(client.store.redis, ids, fleet, args.timeout)
            waited_s = time.time() - t0
            sampler.cancel()
            if profiler is not None:
                stop_py_spy(profiler)
            cpu_after, net_after, busy_after = cpu_seconds(pids), listen_overflows(), machine_busy()
            records = await fetch_records(client, ids)
            seen = server.stats()
    finally:
        fleet.stop()

    statuses = Counter(str(r.status) for r in records)
    done = [r for r in records if r.finished_at is not None]
    first_created = min(r.created_at for r in records).timestamp()
    last_finished = max(r.finished_at for r in done if r.finished_at).timestamp()
    wall = last_finished - first_created
    latencies = [(r.finished_at - r.created_at).total_seconds() for r in done if r.finished_at]
    service = [(r.finished_at - r.started_at).total_seconds() for r in done if r.finished_at and r.started_at]
    waits = [(r.started_at - r.created_at).total_seconds() for r in done if r.started_at]
    intervals = [(r.started_at.timestamp(), r.finished_at.timestamp()) for r in done if r.started_at and r.finished_at]
    steady = [s["running"] for s in samples if s["jobs_queue"] > 0]  # while a backlog waited for the worker
    expected = {"answer": "yes", "note": {"recorded": "x"}}
    wrong = [r.job_id for r in records if r.status == "succeeded" and r.output != expected]
    return {
        "jobs": len(records),
        "statuses": dict(statuses),
        "wrong_outputs": len(wrong),
        "model_requests": seen["requests"],
        "wall_s": round(wall, 3),
        "jobs_per_s": round(len(done) / wall, 1),
        "latency_ms": summary_ms(latencies),
        "latency_note": "finished_at - created_at of each job record (queueing included)",
        "service_ms": summary_ms(service),
        "service_note": "finished_at - started_at (on the worker)",
        "queue_wait_ms": summary_ms(waits),
        "submit": {
            "seconds": round(submit_s, 3),
            "jobs_per_s": round(len(ids) / submit_s, 1),
            "concurrency": args.submit_concurrency,
        },
        "in_flight": {
            "max_sampled": max((s["running"] for s in samples), default=0),
            "mean_sampled_while_backlogged": round(statistics.fmean(steady), 1) if steady else None,
            "max_exact": max_overlap(intervals),
            "worker_slots": args.worker_concurrency,
            "how": "sampled: leases held among the active jobs, every 0.2 s; exact: most overlapping "
            "[started_at, finished_at] of the records",
        },
        "cpu_s": cpu_delta(cpu_before, cpu_after),
        "cpu_ms_per_job": {k: round(v * 1000 / len(records), 2) for k, v in cpu_delta(cpu_before, cpu_after).items()},
        "machine": busy(busy_before, busy_after, cpu_delta(cpu_before, cpu_after)),
        "cpu_window_s": round(waited_s, 2),
        "listen_overflows": {k: net_after[k] - net_before.get(k, 0) for k in net_after},
        "request_samples": seen["samples"],
        "samples": samples,
    }


# -- the same job hand-built on the same stack (benchmarks/fleet_project/stack_baseline.py) -----------


class StackFleet(Fleet):
    """The hand-built stack's jobs and tools workers (plain `celery -A stack_baseline worker`)."""

    def __init__(self, args: argparse.Namespace, base_url: str, logs: Path) -> None:
        super().__init__(args, base_url, logs)
        self.env.update({"STACK_REDIS_URL": args.stack_redis_url, "STACK_CHECKPOINT_URL": args.checkpoint_url,
                         "STACK_MODEL_URL": base_url, "PYTHONPATH": str(PROJECT)})  # fmt: skip

    def start(self, name: str, queues: str, *options: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "stack_baseline", "worker", "-Q", queues, "--loglevel",
             self.args.loglevel, "--without-gossip", "--without-mingle", *options],
            cwd=PROJECT, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()


async def run_stack(args: argparse.Namespace, server: ModelServer, logs: Path) -> dict[str, Any]:
    """N jobs through the hand-built stack: records created and tasks sent as fast as they go."""
    import redis.asyncio as aioredis
    from celery import Celery

    sync_redis = redis.Redis.from_url(args.stack_redis_url)
    sync_redis.flushdb()
    sync_redis.close()
    fleet = StackFleet(args, server.base_url, logs)
    fleet.start("stack_tools_worker", "stack.tools", "-P", "prefork", "-c", "2")
    fleet.start("stack_jobs_worker", "stack.jobs", "-P", "threads", "-c", str(args.worker_concurrency))
    publisher = Celery("stack", broker=args.stack_redis_url)
    publisher.conf.update(task_serializer="json", accept_content=["json"])
    r = aioredis.Redis.from_url(args.stack_redis_url)

    async def submit(ids: list[str]) -> None:
        for job_id in ids:
            text = text_of(int(job_id.split("-")[1]))
            label, tool = bodies_for(text, "yes")
            await r.hset(f"stack:job:{job_id}", mapping={"status": "queued", "created_at": time.time()})
            await asyncio.to_thread(publisher.send_task, "stack.job", args=[job_id, label, tool], queue="stack.jobs",
                                    ignore_result=True)  # fmt: skip

    async def wait_done(count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while int(await r.get("stack:done") or 0) < count:
            fleet.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hand-built stack ended {int(await r.get('stack:done') or 0)} of {count} jobs")
            await asyncio.sleep(0.2)

    try:
        warm = [f"warm-{i}" for i in range(args.warmup)]
        await submit(warm)
        await wait_done(len(warm), 180)
        for job_id in warm:
            row = await r.hgetall(f"stack:job:{job_id}")
            if row.get(b"status") != b"succeeded":
                raise RuntimeError(f"hand-built warm-up job {job_id} did not succeed: {row}")
        server.stats()
        pids = {"model server": server.pid, **{n: p.pid for n, p in fleet.processes.items()}}
        cpu_before, busy_before = cpu_seconds(pids), machine_busy()
        t0 = time.time()
        ids = [f"job-{i}" for i in range(args.jobs)]
        await asyncio.gather(*(submit(ids[k :: args.submit_concurrency]) for k in range(args.submit_concurrency)))
        await wait_done(len(warm) + len(ids), args.timeout)
        waited_s = time.time() - t0
        cpu_after, busy_after = cpu_seconds(pids), machine_busy()
        records = [await r.hgetall(f"stack:job:{job_id}") for job_id in ids]
        seen = server.stats()
    finally:
        await r.aclose()
        fleet.stop()
    rows = [{k.decode(): v.decode() for k, v in record.items()} for record in records]
    statuses = Counter(row["status"] for row in rows)
    expected = {"answer": "yes", "note": {"recorded": "x"}}
    wrong = sum(1 for row in rows if row["status"] == "succeeded" and json.loads(row["output"]) != expected)
    done = [row for row in rows if row["status"] == "succeeded"]
    wall = max(float(row["finished_at"]) for row in done) - min(float(row["created_at"]) for row in rows)
    cpu = cpu_delta(cpu_before, cpu_after)
    return {
        "jobs": len(rows),
        "statuses": dict(statuses),
        "wrong_outputs": wrong,
        "model_requests": seen["requests"],
        "wall_s": round(wall, 3),
        "jobs_per_s": round(len(done) / wall, 1),
        "latency_ms": summary_ms([float(row["finished_at"]) - float(row["created_at"]) for row in done]),
        "in_flight": {
            "max_exact": max_overlap(
                [(float(row["started_at"]), float(row["finished_at"])) for row in done if "started_at" in row]
            )
        },  # fmt: skip
        "cpu_s": cpu,
        "cpu_ms_per_job": {k: round(v * 1000 / len(rows), 2) for k, v in cpu.items()},
        "machine": busy(busy_before, busy_after, cpu),
        "cpu_window_s": round(waited_s, 2),
        "request_samples": seen["samples"],
    }


# -- the bare asyncio baseline ---------------------------------------------------------------------


def bodies_for(text: str, answer: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The two request bodies a worker sends for a job, built with slmflow's own helpers."""
    from bench_graphs import decide, graph, note

    def body(skill: Any, values: dict[str, Any]) -> dict[str, Any]:
        request = constraint(skill, "vllm", graph.tools)
        extra = request.pop("extra_body", None) or {}
        return {"messages": render_messages(skill, values, graph.tools), "model": MODEL, "logprobs": True,
                "max_tokens": skill.token_budget, "temperature": 0, **request, **extra}  # fmt: skip

    label = body(decide, {"text": text})
    tool = body(note, {"text": text, "answer": answer}) if answer is not None else None
    return label, tool


def check_bodies(samples: dict[str, dict[str, Any]]) -> None:
    """The baseline's bodies equal those the workers sent (for the same job text)."""
    for kind, sample in samples.items():
        number = re.search(r"ticket (-?\d+):", sample["messages"][1]["content"])
        assert number is not None, sample
        label, tool = bodies_for(text_of(int(number.group(1))), "yes")
        built = label if kind == "label" else tool
        if built != sample:
            raise AssertionError(f"the baseline's {kind} body differs from the worker's:\n{built}\n{sample}")


Post = Callable[[dict[str, Any]], Awaitable[tuple[str | None, list[tuple[str, str]]]]]


async def make_client(kind: str, base_url: str, concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """A `post(body) -> (content, [(tool, arguments)])` on one shared client of this kind, and its close."""
    url = f"{base_url}/chat/completions"

    def parse(data: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
        message = data["choices"][0]["message"]
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        return message.get("content"), calls

    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def post_aiohttp(body: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                return parse(await response.json())

        return post_aiohttp, session.close
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency), timeout=60)

        async def post_httpx(body: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
            response = await client.post(url, json=body)
            response.raise_for_status()
            return parse(response.json())

        return post_httpx, client.aclose
    if kind == "openai":
        import openai

        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=60, max_retries=0)

        async def post_openai(body: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
            fields = dict(body)
            extra = {"structured_outputs": fields.pop("structured_outputs")} if "structured_outputs" in fields else None
            completion = await sdk.chat.completions.create(**fields, extra_body=extra)
            message = completion.choices[0].message
            calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]  # type: ignore[union-attr]
            return message.content, calls

        return post_openai, sdk.close
    raise SystemExit(f"unknown bare client {kind!r}: use aiohttp, httpx or openai")


async def run_bare(kind: str, args: argparse.Namespace, server: ModelServer) -> dict[str, Any]:
    post, close = await make_client(kind, server.base_url, args.concurrency)
    gate = asyncio.Semaphore(args.concurrency)
    intervals: list[tuple[float, float]] = []
    failures: Counter[str] = Counter()

    async def job(i: int) -> None:
        async with gate:
            started = time.time()
            text = text_of(i)
            try:
                label, _ = bodies_for(text)
                answer, _ = await post(label)
                _, tool = bodies_for(text, answer)
                assert tool is not None
                _, calls = await post(tool)
                if [(name, json.loads(arguments)) for name, arguments in calls] != [("record", {"note": "x"})]:
                    failures["wrong answer"] += 1
            except Exception as exc:  # noqa: BLE001 - count, report, go on
                failures[type(exc).__name__] += 1
            intervals.append((started, time.time()))

    try:
        await asyncio.gather(*(job(-1 - i) for i in range(min(args.warmup, args.concurrency))))
        server.stats()
        cpu_before, net_before = cpu_seconds({"model server": server.pid}), listen_overflows()
        busy_before = machine_busy()
        intervals.clear()
        failures.clear()
        created = time.time()
        await asyncio.gather(*(job(i) for i in range(args.jobs)))
        cpu_after, net_after = cpu_seconds({"model server": server.pid}), listen_overflows()
        busy_after = machine_busy()
    finally:
        await close()
    seen = server.stats()
    check_bodies(seen["samples"])
    wall = max(end for _, end in intervals) - created
    return {
        "client": {
            "aiohttp": "one aiohttp.ClientSession",
            "httpx": "one httpx.AsyncClient",
            "openai": "one openai.AsyncOpenAI (max_retries=0)",
        }[kind],
        "jobs": len(intervals),
        "failures": dict(failures),
        "model_requests": seen["requests"],
        "wall_s": round(wall, 3),
        "jobs_per_s": round(len(intervals) / wall, 1),
        "latency_ms": summary_ms([end - created for _, end in intervals]),
        "latency_note": "end - the instant all N were launched (waiting for the semaphore included)",
        "service_ms": summary_ms([end - start for start, end in intervals]),
        "in_flight": {"max_exact": max_overlap(intervals), "limit": args.concurrency},
        "cpu_s": cpu_delta(cpu_before, cpu_after),
        "machine": busy(busy_before, busy_after, cpu_delta(cpu_before, cpu_after)),
        "listen_overflows": {k: net_after[k] - net_before.get(k, 0) for k in net_after},
    }


# -- main ------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the model's answer time per request")
    parser.add_argument("--concurrency", type=int, default=200, help="jobs in flight (bare: semaphore)")
    parser.add_argument("--worker-concurrency", type=int, default=None,
                        help="the jobs worker's slots (default: --concurrency)")  # fmt: skip
    parser.add_argument("--submit-concurrency", type=int, default=16, help="submits in flight")
    parser.add_argument("--bare-clients", default="aiohttp,openai",
                        help="comma-separated: aiohttp, openai, httpx; the ratio uses the first")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=5, help="jobs run (and not counted) before measuring")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="a Redis DB of its own (flushed)")
    parser.add_argument("--checkpoint-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--stack-redis-url", default="redis://127.0.0.1:6379/13",
                        help="the hand-built stack's Redis DB of its own (flushed)")  # fmt: skip
    parser.add_argument("--no-stack", action="store_true", help="skip the hand-built stack")
    parser.add_argument("--loglevel", default="WARNING", help="the workers' log level")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting for the jobs after this")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fleet_throughput.json")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="FILE",
                        help="profile the jobs worker with py-spy (--gil, raw stacks) while measuring")  # fmt: skip
    parser.add_argument("--jobs-processes", type=int, default=1,
                        help="jobs-worker processes (worker --processes; 0: one a core), each all slots")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=1024, help="the model server's listen backlog")
    args = parser.parse_args()
    args.worker_concurrency = args.worker_concurrency or args.concurrency
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path("/tmp") / f"slmflow_fleet_bench_{datetime.now():%Y%m%d_%H%M%S}"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "fleet_throughput",
        "graph": f"{GRAPH} (benchmarks/fleet_project): label step, then one tool call via the tools worker",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "serve"},
        "machine": machine(),
        "load": {"before": uptime(), "loadavg_before": os.getloadavg()},
        "logs": str(logs),
    }
    server = ModelServer(args.delay_ms / 1000, args.backlog)
    try:
        print(f"slmflow: {args.jobs} jobs, model delay {args.delay_ms:g} ms, logs in {logs}", flush=True)
        result["slmflow"] = await run_slmflow(args, server, logs)
        check_bodies(result["slmflow"]["request_samples"])
        result["load"]["after_slmflow"] = uptime()
        if not args.no_stack:
            print(f"hand-built stack: {args.jobs} jobs, same model, broker and checkpointer", flush=True)
            result["stack"] = await run_stack(args, server, logs)
            check_bodies(result["stack"].pop("request_samples"))
        result["bare"] = {}
        for kind in [k.strip() for k in args.bare_clients.split(",") if k.strip()]:
            print(f"bare asyncio via {kind}: {args.jobs} jobs, at most {args.concurrency} in flight", flush=True)
            result["bare"][kind] = await run_bare(kind, args, server)
    finally:
        server.stop()
    result["load"]["after"] = uptime()
    result["load"]["loadavg_after"] = os.getloadavg()
    slm = result["slmflow"]["jobs_per_s"]
    result["ratios"] = {kind: round(slm / bare["jobs_per_s"], 3) for kind, bare in result["bare"].items()}
    result["ratio"] = next(iter(result["ratios"].values()), None)
    result["ratio_note"] = "slmflow jobs/s / bare jobs/s (first of --bare-clients)"
    result["ratio_vs_bare"] = result["ratio"]
    if "stack" in result:
        result["ratio_vs_stack"] = round(slm / result["stack"]["jobs_per_s"], 3)
    return result


def report(result: dict[str, Any]) -> str:
    def line(name: str, run: dict[str, Any]) -> str:
        flight = run["in_flight"]
        most, exact = flight.get("max_sampled", flight["max_exact"]), flight["max_exact"]
        latency = run["latency_ms"]
        return (
            f"{name:<16} {run['jobs_per_s']:>8.1f} jobs/s   p50 {latency['p50']:>8.1f} ms   "
            f"p95 {latency['p95']:>8.1f} ms   max in flight {most} (exact {exact})"
        )

    lines = [line("slmflow", result["slmflow"])]
    if "stack" in result:
        lines.append(line("hand-built stack", result["stack"]))
    lines += [line(f"bare ({kind})", run) for kind, run in result["bare"].items()]
    lines.append(f"ratio slmflow/bare: {result['ratios']}; slmflow/stack: {result.get('ratio_vs_stack')}")
    for name in ("slmflow", "stack"):
        if name in result:
            lines.append(f"{name} CPU ms per job: {result[name]['cpu_ms_per_job']}")
    run, busy_ = result["slmflow"], result["slmflow"]["machine"]
    lines.append(f"slmflow CPU s: {run['cpu_s']} over {run['cpu_window_s']} s")
    lines.append(
        f"cores busy meanwhile {busy_['cores_busy']:.0%}, other people's processes {busy_['others_cpu_s']} CPU s"
    )
    lines.append(f"load: {result['load']['before']}  ->  {result['load']['after']}")
    return "\n".join(lines)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        serve(arguments.delay_ms / 1000, arguments.backlog)
        sys.exit(0)
    outcome = asyncio.run(main(arguments))
    printable = {k: v for k, v in outcome.items() if k != "slmflow"}
    printable["slmflow"] = {k: v for k, v in outcome["slmflow"].items() if k not in ("samples", "request_samples")}
    print(json.dumps(printable, indent=2))
    print(report(outcome))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"wrote {arguments.out}")
