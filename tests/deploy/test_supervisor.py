"""deploy/Procfile for real: the one-machine topology under honcho runs a job, then stops and leaves nothing.

Redis, a private Postgres cluster, the scripted model, a jobs worker, a tools worker and the exporter, on free
loopback ports written into a .env made from deploy/.env.example; the project is benchmarks/fleet_project,
whose `bench_small` graph (a label, then one tool call) the scripted model answers right. honcho starts each
process in a session of its own, so stopping honcho's process group reaches none of them directly: the test
checks that every process of the topology is gone afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slmflow import Client, JobStatus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "deploy" / "Procfile"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
PROJECT = ROOT / "benchmarks" / "fleet_project"
PORTS = ("REDIS_PORT", "PG_PORT", "MODEL_PORT", "METRICS_PORT", "JOBS_HEALTH_PORT", "TOOLS_HEALTH_PORT")
READY_S = 120.0
"""How long the topology may take to come up (two workers importing LangGraph and Celery on 2 cores)."""
STOP_S = 30.0
"""How long honcho may take to stop after SIGTERM (it sends SIGKILL to what is left after 5 s) before the
test sends SIGKILL to its process group."""


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def require_binaries() -> None:
    """What the Procfile runs besides Python; a missing one fails the test, it never skips it."""
    missing = [name for name in ("redis-server", "pg_isready") if shutil.which(name) is None]
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and shutil.which("initdb") is None:
        missing.append("initdb (PostgreSQL 15+)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (Postgres refuses to run as root)")
    if missing:
        pytest.fail(f"deploy/Procfile needs {', '.join(missing)} installed")


def write_env(path: Path, overrides: dict[str, str]) -> dict[str, str]:
    """deploy/.env.example with `overrides` applied (replaced in place, or appended); returns its values."""
    lines, seen = [], set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.partition("=")[0]
        if not line.startswith("#") and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items() if key not in seen]
    path.write_text("\n".join(lines) + "\n")
    return dict(re.findall(r"^([A-Za-z_]\w*)=(.*)$", path.read_text(), re.MULTILINE))


@dataclass(frozen=True)
class Proc:
    """A process by pid and start time (a pid alone may be reused)."""

    pid: int
    started: int
    session: int

    @staticmethod
    def read(pid: int) -> tuple[Proc, int, str] | None:
        """The process `pid`, its parent and its state, or None when it is gone."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        # After the command: state, ppid, pgrp, session, ..., starttime (field 22, here index 19).
        return Proc(pid, int(fields[19]), int(fields[3])), int(fields[1]), fields[0]

    def alive(self) -> bool:
        """Still running (a zombie waiting to be reaped is not)."""
        now = Proc.read(self.pid)
        return now is not None and now[0].started == self.started and now[2] != "Z"


def all_processes() -> list[tuple[Proc, int, str]]:
    """Every process on the machine, with its parent and state."""
    found = (Proc.read(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [p for p in found if p is not None]


def descendants(root: int) -> set[Proc]:
    """Every process below `root`, whatever session it started for itself."""
    children: dict[int, list[Proc]] = {}
    for proc, parent, _ in all_processes():
        children.setdefault(parent, []).append(proc)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child.pid)
    return found


def wait_until(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None]) -> None:
    """Poll `check` every 0.2 s; `alive` raises if the topology died meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        alive()
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.2)


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Topology:
    """The Procfile under honcho, in its own process group, with everything it started tracked."""

    env: dict[str, str]
    log: Path
    procfile: Path = PROCFILE
    honcho: subprocess.Popen[bytes] | None = None
    seen: set[Proc] = field(default_factory=set)

    def start(self, env_file: Path) -> None:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        # The test's own settings (SLMFLOW_*, OTEL_*) stay out: the topology reads its .env only.
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLMFLOW_", "OTEL_"))} | {"PATH": path}
        with self.log.open("wb") as out:
            self.honcho = subprocess.Popen(
                [sys.executable, "-m", "honcho", "--no-colour", "-f", str(self.procfile), "-e", str(env_file),
                 "-d", str(ROOT), "start"],
                cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        """The end of honcho's output: every process's lines, prefixed with its name."""
        return self.log.read_text(errors="replace")[-6000:]

    def check_running(self) -> None:
        """Fail at once, with the output, if honcho stopped (it does when any process exits)."""
        assert self.honcho is not None
        if self.honcho.poll() is not None:
            pytest.fail(f"honcho exited ({self.honcho.returncode}) before the test ended:\n{self.output()}")

    def track(self) -> set[Proc]:
        """Remember every process honcho has started so far (directly or not)."""
        assert self.honcho is not None
        self.seen |= descendants(self.honcho.pid)
        return self.seen

    def stop(self) -> bool:
        """SIGTERM to honcho's process group, then SIGKILL after STOP_S; True if SIGKILL was needed."""
        assert self.honcho is not None
        self.track()
        os.killpg(self.honcho.pid, signal.SIGTERM)
        try:
            self.honcho.wait(timeout=STOP_S)
            return False
        except subprocess.TimeoutExpired:
            os.killpg(self.honcho.pid, signal.SIGKILL)
            self.honcho.wait()
            return True

    def leftovers(self, timeout: float = 5.0) -> list[Proc]:
        """Tracked processes, or any process in one of their sessions, still alive after `timeout`."""
        sessions = {p.session for p in self.seen} - {os.getsid(0)}
        deadline = time.monotonic() + timeout
        while True:
            alive = {p for p in self.seen if p.alive()}
            alive |= {p for p, _, state in all_processes() if p.session in sessions and state != "Z"}
            if not alive or time.monotonic() > deadline:
                return sorted(alive, key=lambda p: p.pid)
            time.sleep(0.2)

    def kill_leftovers(self) -> None:
        """SIGKILL, by pid, whatever of the topology is still alive (cleanup after a failure)."""
        for proc in self.leftovers(timeout=0):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_binaries()
    # Postgres runs as the `postgres` user under root: its directory must be reachable by it (pytest's
    # tmp_path is under a 0700 directory).
    state = Path(tempfile.mkdtemp(prefix="slmflow-procfile-"))
    state.chmod(0o755)
    ports = dict(zip(PORTS, map(str, free_ports(len(PORTS))), strict=True))
    overrides = ports | {
        "LOCAL_DIR": str(state),
        "REDIS_PASSWORD": secrets.token_hex(8),
        "POSTGRES_PASSWORD": secrets.token_hex(8),
        "SLMFLOW_PROJECT": str(PROJECT),
        "SLMFLOW_CACHE_DIR": str(state / "cache"),
    }
    env = write_env(state / ".env", overrides)
    topology = Topology(env, state / "honcho.log")
    topology.start(state / ".env")
    try:
        yield topology
    finally:
        if topology.honcho is not None and topology.honcho.poll() is None:
            topology.stop()
        topology.kill_leftovers()
        shutil.rmtree(state, ignore_errors=True)


def test_procfile_runs_a_job_and_stops_without_leftovers(topology: Topology) -> None:
    env = topology.env
    health = [f"http://127.0.0.1:{env[key]}/readyz" for key in ("JOBS_HEALTH_PORT", "TOOLS_HEALTH_PORT")]
    health.append(f"http://127.0.0.1:{env['METRICS_PORT']}/readyz")
    for url in health:
        wait_until(f"{url} answers 200", lambda url=url: http_ok(url), READY_S, topology.check_running)

    redis_url = f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{env['REDIS_PORT']}/0"
    with Client(redis_url=redis_url) as client:
        wait_until("bench_small in the catalog", lambda: "bench_small" in {g.name for g in client.graphs()},
                   READY_S, topology.check_running)  # fmt: skip
        job = client.submit("bench_small", {"text": "Can you call me back about my order?"})
        record = job.result(timeout=60)
    assert record.status is JobStatus.SUCCEEDED
    assert record.output == {"answer": "yes", "note": {"recorded": "ok"}}

    def demand() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics.json", timeout=5) as response:
            return dict(json.load(response))

    # The jobs worker announces its slots with its heartbeat (once a second): the autoscaler's denominator.
    wait_until("the jobs worker's slots", lambda: demand()["workers"] == {"jobs": 1, "slots": 200}, 10,
               topology.check_running)  # fmt: skip
    now = demand()
    assert now["jobs"]["active"] == 0 and now["tools"]["queued"] == {"slmflow.tools": 0}, now

    started = topology.track()
    names = " ".join(Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace") for p in started if p.alive())
    for program in ("redis-server", "postgres", "scripted_model.py", "slmflow.jobs", "slmflow.tools", "metrics"):
        assert program in names, f"no {program} process under honcho"

    killed = topology.stop()
    leftovers = topology.leftovers()
    assert not leftovers, f"still running after honcho stopped (SIGKILL needed: {killed}): {leftovers}"
    for p in sorted(started, key=lambda p: p.pid):
        assert not p.alive(), p


def sleeping(processes: set[Proc]) -> set[Proc]:
    """The `sleep` processes among `processes`."""
    return {p for p in processes if p.alive() and Path(f"/proc/{p.pid}/comm").read_text() == "sleep\n"}


def test_a_process_that_escapes_honcho_is_caught_as_a_leftover(tmp_path: Path) -> None:
    """The check above can fail: a process that leaves honcho's reach (a session of its own) is found."""
    procfile, env_file = tmp_path / "Procfile", tmp_path / ".env"
    procfile.write_text("stays: exec sleep 300\nescapes: setsid sleep 301 >/dev/null 2>&1 & exec sleep 302\n")
    env_file.write_text("")
    topology = Topology({}, tmp_path / "honcho.log", procfile)
    topology.start(env_file)
    try:
        wait_until("three sleep processes", lambda: len(sleeping(topology.track())) == 3, 20, topology.check_running)
        assert topology.stop() is False, "its output redirected, the escaped process does not hold honcho up"
        leftovers = topology.leftovers(timeout=1)
        assert len(leftovers) == 1 and b"301" in Path(f"/proc/{leftovers[0].pid}/cmdline").read_bytes()
    finally:
        topology.kill_leftovers()
    assert topology.leftovers(timeout=5) == []
