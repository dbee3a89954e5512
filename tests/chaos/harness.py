"""The chaos harness: a private Redis and Postgres, a fleet of workers as subprocesses, a scripted
model, a driver that submits jobs while a seeded fault injector kills, freezes and restarts things,
and the counts that say whether any job was lost, stranded or done twice.

Used by `tests/chaos/test_chaos.py` (reduced sizes, counts asserted) and `benchmarks/chaos.py`
(full size, times measured). Everything runs on loopback, on free ports, in its own directories,
and is stopped at the end (also on failure: `try/finally` everywhere, and an `atexit` net that
stops whatever is still alive). Processes are stopped by pid or process group, never by name.

Terms (issue 14): *lost* = a submitted job with no record, or one that never ends (still not
settled `lost_after_s` after the stuck bound); *stuck* = not settled (terminal or paused for review)
`stuck_after_s` after the last fault; *duplicated* = a job with more than one `chaos_effects` row for
a tool; *resume time* = from a jobs-worker SIGKILL to each affected job's next `job_started`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from pydantic import BaseModel

from slmflow.testing import Reply, ScriptedServer

__all__ = [
    "PROJECT",
    "ChaosEnv",
    "ChaosFleet",
    "ChaosModel",
    "ChaosRun",
    "PrivatePostgres",
    "PrivateRedis",
    "SCENARIOS",
    "Worker",
    "require_binaries",
]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent / "project"
GRAPH = "chaos"
MODEL = "slm"
SETTLED = frozenset({"succeeded", "failed", "cancelled", "needs_review"})
P = "slmflow:"

# -- cleanup net -----------------------------------------------------------------------------------

_LIVE: list[Any] = []
_LIVE_LOCK = threading.Lock()


def _track(thing: Any) -> None:
    with _LIVE_LOCK:
        _LIVE.append(thing)


def _untrack(thing: Any) -> None:
    with _LIVE_LOCK, contextlib.suppress(ValueError):
        _LIVE.remove(thing)


@atexit.register
def _close_everything() -> None:
    """Whatever a crash or an interrupt left running: fleets first, then the stores."""
    with _LIVE_LOCK:
        things = list(reversed(_LIVE))
    for thing in things:
        with contextlib.suppress(Exception):
            thing.close()


def install_sigterm_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so that `finally` blocks and atexit stop everything."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


# -- small helpers -----------------------------------------------------------------------------------


def log(message: str) -> None:
    """A progress line on stderr (pytest shows it with -s or on failure)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bin() -> Path:
    """The newest PostgreSQL server binaries under /usr/lib/postgresql."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)")
    return versions[-1].parent


def require_binaries() -> None:
    """Fail loudly (never skip) when redis-server, initdb or runuser are missing."""
    missing = [name for name in ("redis-server", "runuser") if shutil.which(name) is None]
    if missing:
        raise RuntimeError(f"the chaos suite needs {', '.join(missing)} on PATH")
    pg_bin()


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat and stat[0] != "Z" and int(stat[2]) == pgid:
            members.append(int(entry.name))
    return members


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _tcp_peers(pid: int) -> Counter[int]:
    """Remote ports of the established loopback TCP connections of process `pid`."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    peers: Counter[int] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes:
                    peers[int(parts[2].rsplit(":", 1)[1], 16)] += 1
    return peers


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, max (None when empty)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 3), "p95": round(p95, 3),
            "max": round(ordered[-1], 3)}  # fmt: skip


# -- Redis ---------------------------------------------------------------------------------------------


class PrivateRedis:
    """Its own redis-server on a loopback port, AOF on (fsync always), no RDB, no eviction."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="slmflow-chaos-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        _track(self)

    def url(self, db: int = 0) -> str:
        """redis://127.0.0.1:PORT/DB."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start and wait until it answers (its AOF is replayed if the directory has one)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--maxmemory-policy", "noeviction", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on {self.port} did not start:\n{tail(self.dir / 'redis.log')}"
                    ) from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """SIGKILL (a crash: AOF with fsync always keeps every acknowledged write) or SIGTERM (a shutdown)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, kill: bool = True, down_s: float = 0.0) -> None:
        """Stop, stay down `down_s`, start again on the same port and directory."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def client(self, db: int = 0) -> redis.Redis:
        """A decode_responses client."""
        return redis.Redis(port=self.port, db=db, decode_responses=True, socket_timeout=10)

    def close(self) -> None:
        """Stop it (kill) and forget it."""
        self.stop(kill=True)
        _untrack(self)


# -- Postgres ----------------------------------------------------------------------------------------


class PrivatePostgres:
    """A private PostgreSQL cluster (initdb as the postgres user: this machine runs as root)."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.bin = pg_bin()
        # Its own directory in /tmp: the postgres user must be able to reach it, and pytest's
        # tmp_path sits under a root-only directory.
        where = workdir if self._reachable(workdir) else None
        self.root = Path(tempfile.mkdtemp(prefix="slmflow-chaos-pg-", dir=where))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.restarts = 0
        self._running = False
        _track(self)
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--no-sync")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            # fsync off: a crash of the server process (our faults) loses nothing, only an OS crash would.
            conf.write("\nfsync = off\nfull_page_writes = off\nmax_connections = 400\nshared_buffers = 64MB\n")

    @staticmethod
    def _reachable(workdir: Path | None) -> bool:
        if workdir is None:
            return False
        path = Path(workdir).resolve()
        return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])

    def _as_postgres(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                               f"{tail(self.logfile)}")  # fmt: skip
        return done

    def url(self, db: str = "postgres") -> str:
        """postgresql://postgres@127.0.0.1:PORT/DB."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def pid(self) -> int | None:
        """The postmaster's pid, if running."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                          "-o", options, "start")  # fmt: skip
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (`fast`: a clean shutdown; `immediate`: a crash, recovery at the next start)."""
        if not self._running and self.pid() is None:
            return
        pid = self.pid()
        try:
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop",
                              timeout=60)  # fmt: skip
        except (RuntimeError, subprocess.TimeoutExpired):
            if pid is not None:  # by pid: the postmaster and its backends
                for child in [*children_of(pid), pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                time.sleep(0.5)
            with contextlib.suppress(OSError):
                (self.data / "postmaster.pid").unlink()
        self._running = False

    def restart(self, mode: str = "immediate", down_s: float = 0.0) -> None:
        """Stop (`immediate`: as if it crashed), stay down `down_s`, start again."""
        self.stop(mode)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def create_database(self, name: str) -> str:
        """Create database `name`; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop it and remove its files."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        _untrack(self)


CHAOS_TABLES = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    id bigserial PRIMARY KEY, tool text NOT NULL, job_id text, ref text, call_key text,
    pid integer NOT NULL, ppid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    done_at timestamptz
);
CREATE TABLE IF NOT EXISTS chaos_effects (
    id bigserial PRIMARY KEY, tool text NOT NULL, job_id text, ref text, call_key text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX IF NOT EXISTS chaos_effects_key ON chaos_effects (tool, call_key);
"""


@dataclass
class ChaosEnv:
    """A private Redis and Postgres, shared by several runs (each run gets a fresh DB of each)."""

    workdir: Path
    redis: PrivateRedis
    postgres: PrivatePostgres
    owned: bool = False
    """The workdir was made here: removed at close (logs included) unless `keep`."""
    keep: bool = False

    @classmethod
    def create(cls, workdir: Path | None = None, keep: bool = False) -> ChaosEnv:
        """Start both stores (fails loudly if a binary is missing)."""
        require_binaries()
        owned = workdir is None
        workdir = Path(workdir or tempfile.mkdtemp(prefix="slmflow-chaos-"))
        workdir.mkdir(parents=True, exist_ok=True)
        store = PrivateRedis(workdir=workdir / "redis")
        postgres = None
        try:
            store.start()
            postgres = PrivatePostgres()
            postgres.start()
        except BaseException:
            store.close()
            if postgres is not None:
                postgres.close()
            raise
        log(f"env: redis on {store.port}, postgres on {postgres.port} ({postgres.root}), workdir {workdir}")
        return cls(workdir, store, postgres, owned, keep)

    def close(self) -> None:
        """Stop both stores (and remove the workdir if it was made here and not kept)."""
        try:
            self.redis.close()
        finally:
            self.postgres.close()
        if self.owned and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ChaosEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the model ----------------------------------------------------------------------------------------

_REF = re.compile(r"ref=(\S+)")
TRUNCATED = b'{"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'
GARBAGE = b"\x00\xff<html>502 Bad Gateway</html> not json \xfe"


def request_kind(body: dict[str, Any]) -> str:
    """label, stamp or charge: which step of the chaos graph a request belongs to."""
    if "structured_outputs" in body or body.get("response_format"):
        return "label"
    tools = [t["function"]["name"] for t in body.get("tools", [])]
    return tools[0] if len(tools) == 1 else "other"


class ChaosModel:
    """The scripted model of the chaos graph, answering by request shape, with optional faults.

    `delay` applies to every answer; `fault` (set by the model-fault scenario) is a function of
    (request kind, rng) returning a faulty `Reply` or None.
    """

    def __init__(self, delay: float = 0.0, seed: int = 0) -> None:
        self.delay = delay
        self.fault: Callable[[str, random.Random], Reply | None] | None = None
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.server: ScriptedServer | None = None

    def __call__(self, body: dict[str, Any]) -> Reply:
        kind = request_kind(body)
        self.requests[kind] += 1
        if self.server is not None and len(self.server.requests) > 500:
            self.server.requests.clear()  # called under the server's lock: keep memory flat
        if self.fault is not None:
            reply = self.fault(kind, self.rng)
            if reply is not None:
                self.faults[_fault_name(reply)] += 1
                return reply
        text = " ".join(str(m.get("content") or "") for m in body.get("messages", []))
        match = _REF.search(text)
        ref = match.group(1) if match else "unknown"
        if kind == "label":
            return Reply(text="yes", delay=self.delay)
        if kind == "stamp":
            return Reply(tool_calls=[("stamp", {"ref": ref})], delay=self.delay)
        if kind == "charge":
            return Reply(tool_calls=[("charge", {"ref": ref, "amount_cents": 100})], delay=self.delay)
        return Reply(status=400, text=f"the chaos model has no answer for {kind}")


def _fault_name(reply: Reply) -> str:
    if reply.close:
        return "dropped"
    if reply.body is not None:
        return "truncated" if reply.body.startswith(b"{") else "garbage"
    if reply.status >= 500:
        return f"http_{reply.status}"
    return "hang" if reply.delay else "other"


# -- the fleet ---------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One worker subprocess (its own process group)."""

    name: str
    kind: str  # jobs | tools
    process: subprocess.Popen[bytes]
    logfile: Path
    started: float

    @property
    def pid(self) -> int:
        """The worker's main pid (its process group id too)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return self.process.poll() is None


class ChaosFleet:
    """Jobs and tools workers as subprocesses (`python -m slmflow worker`) of the chaos project."""

    def __init__(self, workdir: Path, *, redis_url: str, checkpoint_url: str, chaos_pg_url: str, model_url: str,
                 lease_ttl_s: float = 4, reconcile_after_s: float = 5, drain_s: float = 5,
                 extra_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        self.pg_port = int(checkpoint_url.rsplit(":", 1)[1].split("/")[0])
        pythonpath = os.pathsep.join([str(PROJECT), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLMFLOW_", "OTEL_", "CHAOS_"))},
            "PYTHONPATH": pythonpath,
            "SLMFLOW_PROJECT": str(PROJECT),
            "SLMFLOW_REDIS_URL": redis_url,
            "SLMFLOW_CHECKPOINT_URL": checkpoint_url,
            "SLMFLOW_SLM_BASE_URL": model_url,
            "SLMFLOW_SLM_MODEL": MODEL,
            "SLMFLOW_LEASE_TTL_S": str(lease_ttl_s),
            "SLMFLOW_RECONCILE_AFTER_S": str(reconcile_after_s),
            "SLMFLOW_DRAIN_S": str(drain_s),
            "SLMFLOW_DATASET_URL": f"sqlite:///{workdir / 'dataset.db'}",
            "SLMFLOW_CACHE_DIR": str(workdir / "cache"),
            "CHAOS_PG_URL": chaos_pg_url,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.lease_ttl_s, self.drain_s = lease_ttl_s, drain_s
        self.workers: dict[str, Worker] = {}
        self.generations: Counter[str] = Counter()
        self._groups: set[int] = set()
        self._closed = False  # a restart timer that fires after the fleet stopped must start nothing
        self.restarts: Counter[str] = Counter()
        self._lock = threading.RLock()
        _track(self)

    # -- starting ------------------------------------------------------------------------------------

    def start(self, name: str, kind: str) -> Worker:
        """Start worker `name` (`jobs` or `tools`); a name already used is a restart of it."""
        queues = {"jobs": "slmflow.jobs", "tools": "slmflow.tools"}[kind]
        # Tools sleep CHAOS_TOOL_SLEEP_S each: 6 prefork children keep up with 2 calls a job at 10 jobs/s.
        slots = ["--concurrency", "6"] if kind == "tools" else []
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the fleet is stopped: not starting {name}")
            self.generations[name] += 1
            logfile = self.logs / f"{name}.{self.generations[name]}.log"
            with logfile.open("wb") as out:  # the child keeps its own copy of the fd
                process = subprocess.Popen(
                    [sys.executable, "-m", "slmflow", "worker", "--queues", queues, "--loglevel", "WARNING",
                     "--project", str(PROJECT), *slots],
                    cwd=PROJECT, env=self.env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            self._groups.add(process.pid)
            worker = Worker(name, kind, process, logfile, time.time())
            self.workers[name] = worker
            return worker

    def start_many(self, jobs: int, tools: int, timeout: float = 60) -> None:
        """Start `jobs` jobs workers and `tools` tools workers, and wait until each is connected."""
        for i in range(jobs):
            self.start(f"jobs-{i + 1}", "jobs")
        for i in range(tools):
            self.start(f"tools-{i + 1}", "tools")
        for worker in list(self.workers.values()):
            self.wait_ready(worker, timeout)

    def wait_ready(self, worker: Worker, timeout: float = 60) -> None:
        """Until the worker holds its broker connections (and, for jobs, its checkpoint pool)."""
        deadline = time.monotonic() + timeout
        while True:
            peers = _tcp_peers(worker.pid)
            if peers[self.redis_port] >= 2 and (worker.kind == "tools" or peers[self.pg_port] >= 1):
                return
            if not worker.alive():
                raise RuntimeError(f"worker {worker.name} exited ({worker.process.returncode}) while starting:\n"
                                   f"{tail(worker.logfile)}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.name} not ready after {timeout:g}s:\n{tail(worker.logfile)}")
            time.sleep(0.2)

    # -- faults --------------------------------------------------------------------------------------

    def signal(self, name: str, sig: int) -> Worker:
        """Send `sig` to the whole process group of worker `name`."""
        worker = self.workers[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, sig)
        return worker

    def kill(self, name: str) -> Worker:
        """SIGKILL worker `name` (and its pool children) and reap it."""
        worker = self.signal(name, signal.SIGKILL)
        worker.process.wait(timeout=30)
        return worker

    def restart(self, name: str) -> Worker:
        """Start worker `name` again (a new process, the same queues)."""
        with self._lock:
            old = self.workers[name]
            if old.alive():
                self.kill(name)
            self.restarts[old.kind] += 1
            return self.start(name, old.kind)

    def alive(self) -> dict[str, bool]:
        """Which workers still run."""
        return {name: w.alive() for name, w in self.workers.items()}

    # -- stopping ------------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """SIGKILL every process group this fleet ever started, and reap the leaders."""
        with self._lock:
            self._closed = True
            for worker in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGCONT)  # a frozen worker must die too
                    os.killpg(worker.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=30)
            for pgid in self._groups:  # orphaned pool children of a leader that died alone
                for pid in group_members(pgid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def log_tails(self, lines: int = 30) -> str:
        """The end of every worker log (for a failure's report)."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{tail(path, lines)}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop everything."""
        self.stop_all()
        _untrack(self)


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One fault the injector did: when, what, to what."""

    kind: str
    at: float
    target: str = ""
    pid: int | None = None
    ended: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ChaosRun:
    """One scenario run: a fresh Redis DB and Postgres database, a model, a fleet, a driver."""

    def __init__(self, env: ChaosEnv, name: str, seed: int, *, model_delay: float = 0.0, lease_ttl_s: float = 4,
                 reconcile_after_s: float = 5, drain_s: float = 5, tool_sleep_s: float = 0.2,
                 request_timeout_s: float = 10, extra_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.env, self.name, self.seed = env, name, seed
        self.rng = random.Random(seed)
        self.tag = f"{name}_{seed}_{uuid.uuid4().hex[:6]}".lower()
        self.workdir = env.workdir / self.tag
        self.workdir.mkdir(parents=True)
        env.redis.client().flushall()
        self.redis_url = env.redis.url(0)
        self.pg_url = env.postgres.create_database(self.tag)
        with psycopg.connect(self.pg_url, autocommit=True) as connection:
            connection.execute(CHAOS_TABLES)
        # LangGraph's checkpoint tables too: jobs workers starting at once on an empty database race
        # on its migrations (UniqueViolation on checkpoint_migrations_pkey) and fail to start.
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(self.pg_url) as saver:
            saver.setup()
        self.model = ChaosModel(model_delay, seed)
        self.server = ScriptedServer({MODEL: self.model})
        self.model.server = self.server
        self.request_timeout_s = request_timeout_s
        self.server.start()
        self.fleet = ChaosFleet(
            self.workdir, redis_url=self.redis_url, checkpoint_url=self.pg_url, chaos_pg_url=self.pg_url,
            model_url=self.server.base_url, lease_ttl_s=lease_ttl_s, reconcile_after_s=reconcile_after_s,
            drain_s=drain_s, extra_env={"CHAOS_TOOL_SLEEP_S": str(tool_sleep_s),
                                        "SLMFLOW_REQUEST_TIMEOUT": str(request_timeout_s), **(extra_env or {})},
        )  # fmt: skip
        self.faults: list[Fault] = []
        self.submitted: dict[str, str | None] = {}  # ref -> job id (None: never accepted)
        self.submit_errors: Counter[str] = Counter()
        self.submit_started = self.submit_ended = 0.0
        self.client: Any = None
        self.notes: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._thread_errors: list[BaseException] = []
        self.closed = False
        _track(self)
        log(f"run {self.tag}: seed {seed} (rerun with this seed to replay the fault schedule)")

    # -- lifecycle ------------------------------------------------------------------------------------

    def start_fleet(self, jobs: int = 2, tools: int = 1) -> None:
        """Start the workers, wait for them and for the catalog, open the SDK client."""
        from slmflow import Client

        self.fleet.start_many(jobs, tools)
        self.client = Client(redis_url=self.redis_url)
        deadline = time.monotonic() + 60
        while not any(g.name == GRAPH for g in self.client.graphs()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker published graph {GRAPH!r}:\n{self.fleet.log_tails()}")
            time.sleep(0.2)

    def close(self) -> None:
        """Stop the fleet, the model, the client (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.fleet.close()
        finally:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close()
            self.server.stop()
            _untrack(self)

    def __enter__(self) -> ChaosRun:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            log(f"run {self.tag} failed ({exc_type.__name__}); worker logs:\n{self.fleet.log_tails()}")
        self.close()

    # -- background work -------------------------------------------------------------------------------

    def background(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Run `target` in a thread whose exception fails the run."""

        def body() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - re-raised by join_all
                self._thread_errors.append(exc)
                log(f"{name} crashed: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def join_all(self, timeout: float = 600) -> None:
        """Wait for the driver and injector threads; raise what they raised."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                raise RuntimeError(f"thread {thread.name} did not finish within {timeout:g}s")
        if self._thread_errors:
            raise self._thread_errors[0]

    # -- submitting -----------------------------------------------------------------------------------

    def ref(self, i: int) -> str:
        """The reference (and idempotency key) of job `i`."""
        return f"{self.tag}-{i:06d}"

    def submit_all(self, n: int, rate: float, give_up_s: float = 60) -> None:
        """Submit `n` jobs at `rate` jobs/s, each retried under its idempotency key until accepted."""
        self.submit_started = time.time()
        start = time.monotonic()
        for i in range(n):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ref = self.ref(i)
            self.submitted[ref] = None
            deadline = time.monotonic() + give_up_s
            while True:
                try:
                    job = self.client.submit(GRAPH, {"ref": ref, "text": f"request {i}: charge me"},
                                             idempotency_key=ref)  # fmt: skip
                    self.submitted[ref] = job.id
                    break
                except Exception as exc:  # noqa: BLE001 - a store fault: retry under the same key
                    self.submit_errors[type(exc).__name__] += 1
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
        self.submit_ended = time.time()

    # -- faults ----------------------------------------------------------------------------------------

    def fault(self, kind: str, target: str = "", pid: int | None = None, **detail: Any) -> Fault:
        """Record a fault starting now."""
        record = Fault(kind, time.time(), target, pid, detail=detail)
        self.faults.append(record)
        return record

    def kill_worker(self, name: str, restart_after: float | None) -> Fault:
        """SIGKILL worker `name`; start it again after `restart_after` s (None: never)."""
        worker = self.fleet.workers[name]
        record = self.fault(f"sigkill_{worker.kind}", name, worker.pid)
        record.detail["members"] = group_members(worker.pid)  # the pool children whose calls die with it
        self.fleet.kill(name)
        if restart_after is None:
            record.ended = time.time()
        else:
            time.sleep(restart_after)
            self.ended_when_ready(record, [self.fleet.restart(name)])
        log(f"SIGKILL {name} (pid {worker.pid}); restarting after {restart_after:.1f}s")
        return record

    def ended_when_ready(self, record: Fault, workers: list[Worker]) -> None:
        """The fault ends when the restarted workers are up (their boot is not the fleet's recovery)."""

        def wait() -> None:
            for worker in workers:
                with contextlib.suppress(RuntimeError):  # died again: the counts will say so
                    self.fleet.wait_ready(worker)
            record.ended = time.time()
            record.detail["restart_ready_s"] = round(record.ended - record.at, 2)

        threading.Thread(target=wait, daemon=True).start()

    def restart_redis(self, down_s: float) -> Fault:
        """Crash Redis (SIGKILL), keep it down `down_s`, start it on the same AOF."""
        record = self.fault("redis_restart", "redis", self.env.redis.process.pid if self.env.redis.process else None,
                            down_s=down_s)  # fmt: skip
        self.env.redis.restart(kill=True, down_s=down_s)
        record.ended = time.time()
        log(f"redis restarted after {down_s}s down")
        return record

    def restart_postgres(self, down_s: float) -> Fault:
        """Crash Postgres (immediate stop), keep it down `down_s`, start it again (crash recovery)."""
        record = self.fault("postgres_restart", "postgres", self.env.postgres.pid(), down_s=down_s)
        self.env.postgres.restart("immediate", down_s=down_s)
        record.ended = time.time()
        log(f"postgres restarted after {down_s}s down")
        return record

    def last_fault(self) -> float:
        """When the last fault ended (or the last submit, if later); a fault not over yet: now."""
        ends = [f.ended or time.time() for f in self.faults]
        return max([self.submit_ended, *ends])

    # -- waiting and counting -----------------------------------------------------------------------------

    def statuses(self) -> dict[str, str | None]:
        """Status of every accepted job, by ref (None: no record), straight from Redis."""
        client = self.env.redis.client()
        refs = [ref for ref, job_id in self.submitted.items() if job_id]
        found: dict[str, str | None] = {}
        try:
            for start in range(0, len(refs), 500):
                batch = refs[start : start + 500]
                pipe = client.pipeline(transaction=False)
                for ref in batch:
                    pipe.hget(f"{P}job:{self.submitted[ref]}", "status")
                for ref, status in zip(batch, pipe.execute(), strict=True):
                    found[ref] = status
        finally:
            client.close()
        return found

    def wait_settled(self, stuck_after_s: float, lost_after_s: float) -> None:
        """Until every job is settled, or the stuck bound (and then the lost bound) passes."""
        self.notes["stuck_after_s"], self.notes["lost_after_s"] = stuck_after_s, lost_after_s
        stuck: dict[str, str | None] | None = None
        stuck_at = time.time() + stuck_after_s
        last_log = 0.0
        while True:
            try:
                statuses = self.statuses()
            except redis.RedisError as exc:
                log(f"status poll failed: {exc}")
                time.sleep(1)
                continue
            open_ = {ref: s for ref, s in statuses.items() if s not in SETTLED}
            now = time.time()
            if now - last_log > 10:
                log(f"waiting: {len(open_)} of {len(statuses)} jobs not settled ({dict(Counter(statuses.values()))})")
                last_log = now
            if not open_:
                break
            if stuck is None:
                stuck_at = self.last_fault() + stuck_after_s
            if stuck is None and now > stuck_at:
                stuck = open_
                log(f"stuck bound passed: {len(stuck)} jobs not settled; waiting {lost_after_s:g}s more")
            if stuck is not None and now > stuck_at + lost_after_s:
                break
            time.sleep(1)
        self.notes["stuck_refs"] = stuck or {}
        self.notes["settled_after_last_fault_s"] = round(time.time() - self.last_fault(), 2)

    def _unknown_on_killed_runners(self, reviews: list[dict[str, Any]]) -> int:
        """Unknown outcomes whose call was being run by a process a tools-worker kill took down."""
        killed = {pid for f in self.faults if f.kind == "sigkill_tools" for pid in f.detail.get("members", [])}
        client = self.env.redis.client()
        try:
            runners = [client.hget(f"slmflow:call:{r.get('key')}", "runner") for r in reviews]
        finally:
            client.close()
        pids = [int(str(runner).rsplit(":", 1)[1]) for runner in runners if runner]
        return sum(1 for pid in pids if pid in killed)

    def events(self, job_ids: list[str]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
        """Each job's events as (stream time in s, event dict)."""
        client = self.env.redis.client()
        found: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        try:
            for start in range(0, len(job_ids), 200):
                batch = job_ids[start : start + 200]
                pipe = client.pipeline(transaction=False)
                for job_id in batch:
                    pipe.xrange(f"{P}events:{job_id}")
                for job_id, entries in zip(batch, pipe.execute(), strict=True):
                    found[job_id] = [(int(eid.split("-")[0]) / 1000, json.loads(fields["event"]))
                                     for eid, fields in entries]  # fmt: skip
        finally:
            client.close()
        return found

    def effects(self) -> dict[str, Any]:
        """Postgres: effects per (tool, ref), runs, interrupted runs."""
        with psycopg.connect(self.pg_url, autocommit=True) as connection:
            effects = connection.execute("SELECT tool, ref, count(*) FROM chaos_effects GROUP BY tool, ref").fetchall()
            runs = connection.execute(
                "SELECT tool, ref, job_id, pid, ppid, extract(epoch FROM at), done_at IS NOT NULL FROM chaos_runs"
            ).fetchall()
        return {"effects": effects, "runs": runs}

    def results(self, **extra: Any) -> dict[str, Any]:
        """Everything counted, as a JSON-able dict."""
        records = {r.idempotency_key: r for r in self.client.list(graph=GRAPH, limit=len(self.submitted) + 100)}
        accepted = {ref: job_id for ref, job_id in self.submitted.items() if job_id}
        by_status = Counter(r.status.value for ref, r in records.items() if ref in self.submitted)
        stuck = self.notes.get("stuck_refs", {})
        never_ended = [ref for ref in accepted if ref not in records or records[ref].status.value not in SETTLED]
        missing = [ref for ref in accepted if ref not in records]
        unsubmitted = [ref for ref, job_id in self.submitted.items() if not job_id]
        reviews = [_as_dict(records[ref].review) for ref in accepted if ref in records
                   and records[ref].status.value == "needs_review"]  # fmt: skip
        review_reasons = Counter(str(r.get("reason") or (r.get("reasons") or ["?"])[0])[:60] for r in reviews)
        outcome_unknown = sum(1 for r in reviews if r.get("reason") == "outcome_unknown")
        unknown_explained = self._unknown_on_killed_runners(
            [r for r in reviews if r.get("reason") == "outcome_unknown"]
        )
        dead_lettered = sum(1 for r in records.values() if r.status.value == "failed"
                            and "dead-letter" in str(_as_dict(r.error).get("message")))  # fmt: skip
        failures = Counter(str(_as_dict(r.error).get("message", ""))[:100] for r in records.values()
                           if r.status.value == "failed")  # fmt: skip

        stores = self.effects()
        per_tool: dict[str, Counter[str]] = defaultdict(Counter)
        for tool, ref, count in stores["effects"]:
            per_tool[tool][ref] += int(count)
        duplicated = {tool: sum(1 for ref, c in per_tool[tool].items() if c > 1 and ref in self.submitted)
                      for tool in ("stamp", "charge")}  # fmt: skip
        extra_effects = {tool: sum(c - 1 for ref, c in per_tool[tool].items() if c > 1) for tool in ("stamp", "charge")}
        runs = stores["runs"]
        runs_by_tool = Counter(row[0] for row in runs)
        foreign_runs = [row for row in runs if row[1] not in self.submitted]

        # Tools-worker kills that landed mid-call: a run by that worker's pool, started, never done.
        tool_kills = [f for f in self.faults if f.kind == "sigkill_tools"]
        mid_call = 0
        interrupted: Counter[str] = Counter()  # runs cut off by a kill: each may end as an unknown outcome
        for kill in tool_kills:
            cut = [row for row in runs if row[4] == kill.pid and not row[6] and row[5] <= kill.at + 0.05]
            mid_call += bool(cut)
            interrupted.update(row[0] for row in cut)

        job_ids = list(accepted.values())
        events = self.events(job_ids)
        resume = self._resume_times(events)
        forked = sum(1 for evs in events.values() if _terminal_finishes(evs) > 1)
        faults = Counter(f.kind for f in self.faults)
        result = {
            "scenario": self.name,
            "seed": self.seed,
            "tag": self.tag,
            "jobs": {
                "submitted": len(self.submitted),
                "accepted": len(accepted),
                "recorded": len(records),
                "by_status": dict(sorted(by_status.items())),
            },  # fmt: skip
            "lost": len(missing) + len([r for r in never_ended if r not in missing]),
            "lost_detail": {
                "no_record": len(missing),
                "never_ended": len(never_ended) - len(missing),
                "unsubmitted": len(unsubmitted),
                "statuses": dict(Counter(records[r].status.value for r in never_ended if r in records)),
            },
            "stuck": len(stuck),
            "stuck_statuses": dict(Counter(str(s) for s in stuck.values())),
            "stuck_examples": sorted(stuck)[:5],
            "duplicated": duplicated,
            "extra_effects": extra_effects,
            "forked": forked,
            "outcome_unknown": outcome_unknown,
            "outcome_unknown_on_killed_runs": unknown_explained,
            "needs_review_reasons": dict(review_reasons),
            "dead_lettered": dead_lettered,
            "failed_reasons": dict(failures.most_common(5)),
            "kills": {"jobs": faults.get("sigkill_jobs", 0), "tools": faults.get("sigkill_tools", 0)},
            "tools_kills_mid_call": mid_call,
            "interrupted_runs": dict(interrupted),
            "restarts": {
                "jobs_workers": self.fleet.restarts.get("jobs", 0),
                "tools_workers": self.fleet.restarts.get("tools", 0),
                "redis": faults.get("redis_restart", 0),
                "postgres": faults.get("postgres_restart", 0),
            },
            "faults": dict(faults),
            "model": {"requests": dict(self.model.requests), "faults": dict(self.model.faults)},
            "tool_runs": dict(runs_by_tool),
            "foreign_tool_runs": len(foreign_runs),
            "resume_s": resume,
            "submit_errors": dict(self.submit_errors),
            "timeline": [
                {
                    "kind": f.kind,
                    "target": f.target,
                    "pid": f.pid,
                    "at_s": round(f.at - self.submit_started, 2),
                    "took_s": round((f.ended or f.at) - f.at, 2),
                    **f.detail,
                }
                for f in self.faults
            ],  # fmt: skip
            "settled_after_last_fault_s": self.notes.get("settled_after_last_fault_s"),
            "duration_s": round(time.time() - self.submit_started, 1) if self.submit_started else None,
            **extra,
        }
        return result

    def _resume_times(self, events: dict[str, list[tuple[float, dict[str, Any]]]]) -> dict[str, Any]:
        """Kill → the affected job's next `job_started`, for every SIGKILL of a jobs worker.

        Affected: the job had a run open at the kill (a `job_started` with no `job_finished` after
        it) on the killed worker: by `data.worker` (host:pid) when job_started carries it, else the
        job's first event after the kill is a `job_started` (the surviving worker's jobs go on with
        step events). A job open at the kill with no event after it never resumed.
        """
        host = socket.gethostname()
        times: list[float] = []
        resumed_flag = 0
        never = 0
        by_worker = any("worker" in (e.get("data") or {}) for evs in events.values() for _, e in evs
                        if e.get("kind") == "job_started")  # fmt: skip
        for kill in (f for f in self.faults if f.kind == "sigkill_jobs"):
            killed = f"{host}:{kill.pid}"
            for evs in events.values():
                before = [(t, e) for t, e in evs if t <= kill.at]
                after = [(t, e) for t, e in evs if t > kill.at]
                starts = [i for i, (_, e) in enumerate(before) if e.get("kind") == "job_started"]
                if not starts:
                    continue
                last_start = before[starts[-1]][1]
                if any(e.get("kind") == "job_finished" for _, e in before[starts[-1] :]):
                    continue
                if by_worker and (last_start.get("data") or {}).get("worker") != killed:
                    continue
                next_start = next(((t, e) for t, e in after if e.get("kind") == "job_started"), None)
                if not by_worker and after and after[0][1].get("kind") != "job_started":
                    continue  # it went on: its worker was not the one killed
                if next_start is None:
                    never += 1
                    continue
                times.append(next_start[0] - kill.at)
                resumed_flag += bool((next_start[1].get("data") or {}).get("resumed"))
        return {**percentiles(times), "never_resumed": never, "with_resumed_flag": resumed_flag,
                "attributed_by": "data.worker" if by_worker else "next event"}  # fmt: skip


def _terminal_finishes(events: list[tuple[float, dict[str, Any]]]) -> int:
    """How many `job_finished` events with a terminal status a job has (more than one: a fork)."""
    terminal = ("succeeded", "failed", "cancelled")
    return sum(
        1 for _, e in events if e.get("kind") == "job_finished" and (e.get("data") or {}).get("status") in terminal
    )


# -- queue messages (the hostile-input scenario) -------------------------------------------------------


def celery_message(task: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Headers and body of a Celery protocol-2 message, as a worker expects them."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "argsrepr": repr(args),
               "kwargsrepr": repr(kwargs), "origin": "chaos@forger", "ignore_result": True}  # fmt: skip
    return headers, [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def publish_raw(redis_url: str, queue: str, body: bytes | str, *, content_type: str, headers: dict[str, Any],
                content_encoding: str = "utf-8") -> None:  # fmt: skip
    """Publish one message straight onto a Celery queue with kombu (no Celery client in the way)."""
    from kombu import Connection, Exchange, Producer, Queue

    target = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    with Connection(redis_url) as connection:
        producer = Producer(connection.default_channel)
        producer.publish(body, exchange=target.exchange, routing_key=queue, declare=[target],
                         content_type=content_type, content_encoding=content_encoding, headers=headers,
                         serializer=None, retry=True)  # fmt: skip


class _Marker:
    """Unpickling this creates a file: proof that a worker deserialized a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def pickled_body(marker: Path, task_kwargs: dict[str, Any]) -> bytes:
    """A pickled Celery body whose unpickling would create `marker`."""
    return pickle.dumps([[], {**task_kwargs, "arguments": {"ref": _Marker(str(marker))}}, {}], protocol=2)


# -- scenarios ----------------------------------------------------------------------------------------


@dataclass
class Bounds:
    """Time bounds of a scenario's wait."""

    stuck_after_s: float = 40.0
    lost_after_s: float = 15.0


def _run(env: ChaosEnv | None, body: Callable[[ChaosEnv], dict[str, Any]]) -> dict[str, Any]:
    owned = env is None
    env = env or ChaosEnv.create()
    try:
        return body(env)
    finally:
        if owned:
            env.close()


def scenario_kill(size: int, seed: int, env: ChaosEnv | None = None, *, rate: float = 10.0, kills: int | None = None,
                  bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """SIGKILL jobs and tools workers at random while jobs run; each restarted after 1-2 s."""
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "kill", seed) as run:
            run.start_fleet(jobs=2, tools=1)
            span = size / rate
            count = kills if kills is not None else max(6, int(span / 4))
            # At least two of each kind, the rest at random; spread over the submission window.
            kinds = ["jobs", "jobs", "tools", "tools"] + [run.rng.choice(["jobs", "jobs", "tools"])
                                                          for _ in range(max(0, count - 4))]  # fmt: skip
            run.rng.shuffle(kinds)
            times = sorted(run.rng.uniform(2.0, max(3.0, span)) for _ in kinds)

            def inject() -> None:
                start = time.monotonic()
                for at, kind in zip(times, kinds, strict=True):
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    names = [w.name for w in run.fleet.workers.values() if w.kind == kind and w.alive()]
                    if names:
                        run.kill_worker(run.rng.choice(sorted(names)), restart_after=run.rng.uniform(1.0, 2.0))

            run.background(lambda: run.submit_all(size, rate), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, rate=rate)

    return _run(env, body)


def scenario_redis(size: int, seed: int, env: ChaosEnv | None = None, *, rate: float = 8.0, down_s: float = 5.0,
                   bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """Redis crashes (SIGKILL) mid-run and comes back after `down_s` on its AOF, with no supervisor:
    record which workers survived, then restart the dead ones (a late supervisor) and count."""
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "redis", seed) as run:
            run.start_fleet(jobs=2, tools=1)
            at = run.rng.uniform(0.3, 0.6) * size / rate
            survived: dict[str, bool] = {}

            def inject() -> None:
                time.sleep(at)
                record = run.restart_redis(down_s)
                record.ended = None
                time.sleep(15)  # long enough for a worker that dies of it to have died
                survived.update(run.fleet.alive())
                record.detail["workers_survived"] = dict(survived)
                log(f"after the Redis restart, workers alive: {survived}")
                dead = [run.fleet.restart(name) for name, alive in survived.items() if not alive]
                run.ended_when_ready(record, dead)

            run.background(lambda: run.submit_all(size, rate), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, rate=rate, workers_survived=survived,
                               workers_died=sorted(n for n, a in survived.items() if not a))  # fmt: skip

    return _run(env, body)


def scenario_postgres(size: int, seed: int, env: ChaosEnv | None = None, *, rate: float = 8.0, down_s: float = 3.0,
                      bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """Postgres (checkpoints, and the tools' own table) crashes mid-run and restarts after `down_s`."""
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "postgres", seed) as run:
            run.start_fleet(jobs=2, tools=1)
            at = run.rng.uniform(0.3, 0.6) * size / rate

            def inject() -> None:
                time.sleep(at)
                run.restart_postgres(down_s)

            run.background(lambda: run.submit_all(size, rate), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, rate=rate, workers_alive=run.fleet.alive())

    return _run(env, body)


def scenario_sigterm(size: int, seed: int, env: ChaosEnv | None = None, *, model_delay: float = 4.0,
                     drain_s: float = 3.0, bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """SIGTERM a jobs worker while it holds slow jobs: it must exit within SLMFLOW_DRAIN_S (plus a
    margin) and its jobs must finish on the other worker."""
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "sigterm", seed, model_delay=model_delay, drain_s=drain_s) as run:
            run.start_fleet(jobs=2, tools=1)
            exit_s: list[float] = []

            def inject() -> None:
                time.sleep(run.rng.uniform(1.5, 2.5) + size / 20)
                worker = run.fleet.workers["jobs-1"]
                record = run.fault("sigterm_jobs", worker.name, worker.pid)
                run.fleet.signal(worker.name, signal.SIGTERM)
                try:
                    worker.process.wait(timeout=drain_s + 60)
                except subprocess.TimeoutExpired:
                    run.fleet.kill(worker.name)
                record.ended = time.time()
                exit_s.append(record.ended - record.at)
                record.detail.update(exit_s=round(exit_s[0], 2), returncode=worker.process.returncode)
                log(f"SIGTERM jobs-1: exited after {exit_s[0]:.1f}s (drain {drain_s}s), rc {worker.process.returncode}")

            run.background(lambda: run.submit_all(size, 20.0), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s + 3 * model_delay, bounds.lost_after_s)
            held = _jobs_run_by(run, run.fleet.workers["jobs-1"].pid)
            return run.results(size=size, drain_s=drain_s, model_delay_s=model_delay,
                               sigterm_exit_s=round(exit_s[0], 2) if exit_s else None, **held)  # fmt: skip

    return _run(env, body)


def _jobs_run_by(run: ChaosRun, pid: int) -> dict[str, Any]:
    """Jobs whose last run before the end started on worker `pid` (needs `data.worker`)."""
    host = socket.gethostname()
    events = run.events([j for j in run.submitted.values() if j])
    started_on = [j for j, evs in events.items()
                  if any((e.get("data") or {}).get("worker") == f"{host}:{pid}" for _, e in evs)]  # fmt: skip
    if not any("worker" in (e.get("data") or {}) for evs in events.values() for _, e in evs):
        return {"held_by_stopped_worker": None, "finished_elsewhere": None}
    elsewhere = 0
    for job_id in started_on:
        starts = [e for _, e in events[job_id] if e.get("kind") == "job_started"]
        elsewhere += (starts[-1].get("data") or {}).get("worker") != f"{host}:{pid}"
    return {"held_by_stopped_worker": len(started_on), "finished_elsewhere": elsewhere}


def scenario_freeze(size: int, seed: int, env: ChaosEnv | None = None, *, model_delay: float = 1.0,
                    bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """SIGSTOP a jobs worker past its lease (its jobs are taken over), then SIGCONT it: its late
    writes must be refused, no tool runs twice, no job ends twice."""
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "freeze", seed, model_delay=model_delay) as run:
            run.start_fleet(jobs=2, tools=1)
            frozen_s = run.fleet.lease_ttl_s + 5 + 4  # past the lease and the reconcile bound

            def inject() -> None:
                time.sleep(run.rng.uniform(1.5, 3.0))
                name = run.rng.choice(["jobs-1", "jobs-2"])
                worker = run.fleet.workers[name]
                record = run.fault("sigstop_jobs", name, worker.pid, frozen_s=frozen_s)
                run.fleet.signal(name, signal.SIGSTOP)
                time.sleep(frozen_s)
                run.fleet.signal(name, signal.SIGCONT)
                record.ended = time.time()
                log(f"SIGSTOP {name} for {frozen_s}s, then SIGCONT")

            run.background(lambda: run.submit_all(size, 10.0), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            time.sleep(2)  # the thawed worker's late writes, if any, land now
            return run.results(size=size, workers_alive=run.fleet.alive())

    return _run(env, body)


def scenario_model(size: int, seed: int, env: ChaosEnv | None = None, *, rate: float = 8.0,
                   bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """Model faults while jobs run: a 5xx burst, hangs past the request timeout, truncated JSON,
    garbage bodies, dropped connections. Jobs may end `needs_review`; none may be lost or stuck."""
    bounds = bounds or Bounds()
    timeout = 2.0

    def body(env: ChaosEnv) -> dict[str, Any]:
        extra = {"SLMFLOW_MAX_RETRIES": "2"}
        with ChaosRun(env, "model", seed, request_timeout_s=timeout, extra_env=extra) as run:
            run.start_fleet(jobs=2, tools=1)
            phases = ["5xx", "hang", "truncated", "garbage", "dropped"]
            run.rng.shuffle(phases)

            def fault_for(phase: str) -> Callable[[str, random.Random], Reply | None]:
                def fault(kind: str, rng: random.Random) -> Reply | None:
                    if phase == "5xx":
                        return Reply(status=rng.choice([500, 502, 503]), text="scripted outage")
                    if rng.random() > 0.5:
                        return None
                    return {"hang": Reply(delay=timeout + 1.0, text="yes"),
                            "truncated": Reply(body=TRUNCATED), "garbage": Reply(body=GARBAGE),
                            "dropped": Reply(close=True)}[phase]  # fmt: skip

                return fault

            def inject() -> None:
                time.sleep(2.0)
                for phase in phases:
                    record = run.fault(f"model_{phase}", "model")
                    run.model.fault = fault_for(phase)
                    time.sleep(run.rng.uniform(1.5, 2.5))
                    run.model.fault = None
                    record.ended = time.time()
                    time.sleep(0.5)

            run.background(lambda: run.submit_all(size, rate), "submit")
            run.background(inject, "inject")
            run.join_all()
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, rate=rate, workers_alive=run.fleet.alive())

    return _run(env, body)


def scenario_messages(size: int, seed: int, env: ChaosEnv | None = None, *,
                      bounds: Bounds | None = None) -> dict[str, Any]:  # fmt: skip
    """Forged, pickled and malformed messages straight onto the tools and jobs queues.

    A forged `run_tool` (a granted tool, an ungranted one, one that does not exist, each for a job
    that does not exist) must run nothing; a pickle must never be deserialized (its unpickling
    would create a marker file); malformed messages must crash no worker; real jobs still run.
    """
    bounds = bounds or Bounds()

    def body(env: ChaosEnv) -> dict[str, Any]:
        from slmflow.fleet.queues import JOBS_QUEUE, RUN_JOB, RUN_TOOL, TOOLS_QUEUE

        with ChaosRun(env, "messages", seed) as run:
            run.start_fleet(jobs=1, tools=1)
            url = run.redis_url
            marker = run.workdir / "unpickled.marker"
            sent: Counter[str] = Counter()
            forged_refs = []

            def send(kind: str, queue: str, body: bytes | str, content_type: str = "application/json",
                     headers: dict[str, Any] | None = None, encoding: str = "utf-8") -> None:  # fmt: skip
                publish_raw(url, queue, body, content_type=content_type, headers=headers or {},
                            content_encoding=encoding)  # fmt: skip
                run.fault(f"message_{kind}", queue)
                sent[kind] += 1

            # Forged run_tool: well-formed messages for jobs that do not exist.
            for tool, arguments in [("charge", {"amount_cents": 999}), ("stamp", {}), ("ungranted", {}),
                                    ("no_such_tool", {})]:  # fmt: skip
                ref = f"forged-{tool}-{uuid.uuid4().hex[:8]}"
                forged_refs.append(ref)
                kwargs = {"tool": tool, "arguments": {"ref": ref, **arguments}, "key": f"{ref}:charge:0",
                          "job_id": f"no-such-job-{ref}", "step": "charge"}  # fmt: skip
                headers, payload = celery_message(RUN_TOOL, [], kwargs)
                send("forged_tool", TOOLS_QUEUE, json.dumps(payload), headers=headers)
            # A forged run_job for a job that does not exist.
            headers, payload = celery_message(RUN_JOB, [f"no-such-job-{uuid.uuid4().hex}"], {})
            send("forged_job", JOBS_QUEUE, json.dumps(payload), headers=headers)
            # Pickled: on both queues.
            pickle_kwargs = {"tool": "charge", "key": "pickled:charge:0", "job_id": "pickled", "step": "charge"}
            for queue, task in [(TOOLS_QUEUE, RUN_TOOL), (JOBS_QUEUE, RUN_JOB)]:
                headers, _ = celery_message(task, [], pickle_kwargs)
                send("pickled", queue, pickled_body(marker, pickle_kwargs), "application/x-python-serialize",
                     headers, "binary")  # fmt: skip
            time.sleep(4)  # let the workers take them
            with psycopg.connect(run.pg_url, autocommit=True) as connection:
                forged_runs = connection.execute("SELECT tool, ref FROM chaos_runs WHERE ref = ANY(%s)",
                                                 (forged_refs,)).fetchall()  # fmt: skip
            alive_after_forged = run.fleet.alive()
            # Malformed, one kind at a time onto both queues: bad JSON, wrong shapes and types, an
            # unknown task, no headers, bad bytes, a huge argument. A kind that kills a worker is
            # named; the queues are then purged (the message would kill it again: a crash loop) and
            # the worker restarted, so that the next kinds and the real jobs can be counted.
            malformed: list[tuple[str, str, bytes | str, dict[str, Any] | None]] = [
                ("bad_json", RUN_TOOL, "{not json", None),
                ("body_object", RUN_TOOL, json.dumps({"a": 1}), None),
                ("body_short_list", RUN_TOOL, json.dumps([1]), None),
                ("body_ints", RUN_TOOL, json.dumps([1, 2, 3]), None),
                ("kwargs_not_object", RUN_TOOL, json.dumps([[], "kwargs?", {}]), None),
                ("wrong_types", RUN_TOOL, json.dumps([[], {"tool": 5, "arguments": "x", "key": None}, {}]), None),
                ("too_many_args", RUN_TOOL, json.dumps([["a", "b", "c", "d", "e", "f", "g"], {}, {}]), None),
                ("job_id_object", RUN_JOB, json.dumps([[{"job": "dict"}], {}, {}]), None),
                ("job_id_int", RUN_JOB, json.dumps([[123], {"review_answer": {"x": 1}}, {}]), None),
                ("no_args", RUN_JOB, json.dumps([[], {}, {}]), None),
                ("unknown_task", "slmflow.no_such_task", json.dumps([[], {}, {}]), None),
                ("no_headers", "", json.dumps([[], {}, {}]), {}),
                ("bad_bytes", RUN_TOOL, "\udcff".encode("utf-8", "surrogatepass") + b"\xff\xfe", None),
                ("huge_arg", RUN_JOB, json.dumps([["x" * 200_000], {}, {}]), None),
            ]
            killers, crash_loop = _send_malformed(run, malformed, send)
            alive_after_messages = run.fleet.alive()
            log(f"after {sum(sent.values())} hostile messages: killers {killers}, crash loops {crash_loop}")
            for name, alive in alive_after_messages.items():
                if not alive:
                    run.fleet.restart(name)
            # Real jobs still run.
            run.submit_all(size, 10.0)
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, messages=dict(sent), forged_runs=len(forged_runs),
                               forged_runs_detail=[f"{t}:{r}" for t, r in forged_runs],
                               pickle_deserialized=marker.exists(), workers_alive_after_forged=alive_after_forged,
                               malformed_killers=killers, malformed_crash_loops=crash_loop,
                               workers_died=sorted({n for names in killers.values() for n in names}))  # fmt: skip

    return _run(env, body)


def _send_malformed(run: ChaosRun, malformed: list[tuple[str, str, bytes | str, dict[str, Any] | None]],
                    send: Callable[..., None]) -> tuple[dict[str, list[str]], dict[str, bool]]:  # fmt: skip
    """Send each malformed kind to both queues; name the kinds that kill a worker (and whether the
    restarted worker dies of it again), then purge and restart so that the rest can be counted."""
    from slmflow.fleet.queues import JOBS_QUEUE, TOOLS_QUEUE

    killers: dict[str, list[str]] = {}
    crash_loop: dict[str, bool] = {}
    for label, task, raw, override in malformed:
        headers, _ = celery_message(task, [], {})
        if override is not None:
            headers = override
        for queue in (TOOLS_QUEUE, JOBS_QUEUE):
            send(f"malformed_{label}", queue, raw, headers=headers)
        time.sleep(2.5)
        dead = [name for name, worker in run.fleet.workers.items()
                if not worker.alive() or "Unrecoverable error" in tail(worker.logfile, 400)]  # fmt: skip
        if not dead:
            continue
        killers[label] = dead
        log(f"malformed message {label!r} killed {dead}")
        for name in dead:  # restarted as is: does the message kill it again?
            with contextlib.suppress(RuntimeError):
                run.fleet.wait_ready(run.fleet.restart(name))
        time.sleep(4)
        crash_loop[label] = any(not run.fleet.workers[n].alive()
                                or "Unrecoverable error" in tail(run.fleet.workers[n].logfile, 400)
                                for n in dead)  # fmt: skip
        for name in run.fleet.workers:
            run.fleet.kill(name)
        _purge(run.env.redis, [TOOLS_QUEUE, JOBS_QUEUE])
        for name in list(run.fleet.workers):
            run.fleet.restart(name)
        for worker in run.fleet.workers.values():
            run.fleet.wait_ready(worker)
    return killers, crash_loop


def _purge(store: PrivateRedis, queues: list[str]) -> None:
    """Drop every message of these queues, unacked ones included (the operator's last resort)."""
    client = store.client()
    try:
        client.delete(*queues, "unacked", "unacked_index")
    finally:
        client.close()


def scenario_combined(
    size: int, seed: int, env: ChaosEnv | None = None, *, rate: float = 10.0, bounds: Bounds | None = None,
    kill_every: tuple[float, float] = (4.0, 8.0),
) -> dict[str, Any]:  # fmt: skip
    """The full run: SIGKILLs of both kinds every few seconds, one Redis restart and one Postgres
    restart, all in one run (2 jobs workers, 1 tools worker); dead workers after the Redis restart
    are restarted (a supervisor) and reported."""
    bounds = bounds or Bounds(stuck_after_s=45, lost_after_s=30)

    def body(env: ChaosEnv) -> dict[str, Any]:
        with ChaosRun(env, "combined", seed) as run:
            run.start_fleet(jobs=2, tools=1)
            span = size / rate
            redis_at, postgres_at = sorted(run.rng.uniform(0.2 * span, 0.8 * span) for _ in range(2))
            if run.rng.random() < 0.5:
                redis_at, postgres_at = postgres_at, redis_at
            died: list[str] = []

            def inject() -> None:
                start = time.monotonic()
                pending = {"redis": redis_at, "postgres": postgres_at}
                while time.monotonic() - start < span:
                    time.sleep(run.rng.uniform(*kill_every))
                    elapsed = time.monotonic() - start
                    for what, at in list(pending.items()):
                        if elapsed >= at:
                            del pending[what]
                            if what == "redis":
                                run.restart_redis(5.0)
                                time.sleep(10)
                                for name, alive in run.fleet.alive().items():
                                    if not alive:
                                        died.append(name)
                                        run.fleet.restart(name)
                            else:
                                run.restart_postgres(3.0)
                    kind = run.rng.choice(["jobs", "jobs", "tools"])
                    names = [w.name for w in run.fleet.workers.values() if w.kind == kind and w.alive()]
                    if names:
                        run.kill_worker(run.rng.choice(sorted(names)), restart_after=run.rng.uniform(1.0, 2.0))

            run.background(lambda: run.submit_all(size, rate), "submit")
            run.background(inject, "inject")
            run.join_all(timeout=span * 3 + 600)
            run.wait_settled(bounds.stuck_after_s, bounds.lost_after_s)
            return run.results(size=size, rate=rate, workers_died_of_redis_restart=died, kill_every_s=list(kill_every))

    return _run(env, body)


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "kill": scenario_kill,
    "redis": scenario_redis,
    "postgres": scenario_postgres,
    "sigterm": scenario_sigterm,
    "freeze": scenario_freeze,
    "model": scenario_model,
    "messages": scenario_messages,
    "combined": scenario_combined,
}


@contextlib.contextmanager
def chaos_env(workdir: Path | None = None) -> Iterator[ChaosEnv]:
    """A ChaosEnv closed at the end."""
    env = ChaosEnv.create(workdir)
    try:
        yield env
    finally:
        env.close()


def _as_dict(value: BaseModel | None) -> dict[str, Any]:
    """A record's typed review or error as plain JSON (empty when there is none)."""
    return value.model_dump(mode="json") if value is not None else {}
