"""A worker's own HTTP endpoint: probes for an orchestrator, and this worker's metrics.

`GET /livez` answers 200 while the worker's heartbeat ticks (a timer on Celery's consumer, once a
second), a jobs worker's event loop answers, and its oldest in-flight task is younger than the
task's own hard limit plus a minute; else 503 with the reason. `GET /readyz` answers 200 from the
moment the worker consumes its queues until it starts draining. `GET /metrics` is Prometheus text.
None of it goes through the broker: `celery inspect ping` needs remote control and a CLI per probe.

One server per worker process, on `SLMFLOW_HEALTH_PORT` (0: none), from a daemon thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery.worker import state as worker_state
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from slmflow.events import Event, StepFinished
from slmflow.results import Escalation

__all__ = ["HEARTBEAT_S", "ProbeHandler", "WorkerHealth", "serve"]

log = logging.getLogger("slmflow.worker")
HEARTBEAT_S = 1.0
"""How often the worker's heartbeat ticks; three missed ticks make it not live."""


@dataclass
class WorkerHealth:
    """What the probes and `/metrics` of one worker process read."""

    kind: str
    """`jobs` or `tools`."""
    slots: int
    task_limit_s: float
    """The hard limit of this worker's tasks: an older in-flight task means a stuck worker."""
    loop_answered: Callable[[], float] | None = None
    """When the jobs runtime's event loop last answered (monotonic), for a jobs worker."""
    loop_stall_s: float = 30.0
    ready: bool = False
    draining: bool = False
    _tick: float = field(default_factory=time.monotonic)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = {"kind": self.kind}
        self._slots = Gauge("slmflow_worker_slots", "Tasks this worker runs at once.", ["kind"], registry=self.registry)
        self._slots.labels(**labels).set(self.slots)
        self._running = Gauge("slmflow_worker_running_jobs", "Tasks in flight on this worker.", ["kind"],
                              registry=self.registry)  # fmt: skip
        self._oldest = Gauge("slmflow_worker_oldest_job_age_seconds", "Age of this worker's oldest task in flight.",
                             ["kind"], registry=self.registry)  # fmt: skip
        self._beat = Gauge("slmflow_worker_heartbeat_age_seconds", "Seconds since this worker's heartbeat ticked.",
                           ["kind"], registry=self.registry)  # fmt: skip
        self.skill_calls = Counter("slmflow_skill_calls", "Skill steps ended, by who answered (slm, llm, human, "
                                   "none).", ["skill", "tier", "status"], registry=self.registry)  # fmt: skip
        self.escalations = Counter("slmflow_escalations", "Escalations, by skill, reason and where to (llm, review).",
                                   ["skill", "reason", "to"], registry=self.registry)  # fmt: skip

    def tick(self) -> None:
        """The heartbeat: called once a second by the worker's own loop."""
        self._tick = time.monotonic()

    def observe(self, event: Event) -> None:
        """Count a job event (skill steps and escalations) on this worker's metrics."""
        data = event.data
        if isinstance(data, StepFinished) and event.skill:
            self.skill_calls.labels(event.skill, data.tier or "none", data.status).inc()
        elif isinstance(data, Escalation):
            self.escalations.labels(data.skill, str(data.reason), data.to).inc()

    def in_flight(self) -> list[float]:
        """Start times (epoch seconds) of the tasks this process runs now."""
        return [r.time_start for r in list(worker_state.active_requests) if getattr(r, "time_start", None)]

    def live(self) -> tuple[bool, str]:
        """Whether the worker is alive, and why not."""
        now = time.monotonic()
        if now - self._tick > 3 * HEARTBEAT_S:
            return False, f"heartbeat silent for {now - self._tick:.1f}s"
        if self.loop_answered is not None and now - self.loop_answered() > self.loop_stall_s:
            return False, f"event loop silent for {now - self.loop_answered():.1f}s"
        started = self.in_flight()
        if started and time.time() - min(started) > self.task_limit_s + 60:
            return False, f"a task has run {time.time() - min(started):.0f}s, past its limit {self.task_limit_s:g}s"
        return True, "ok"

    def metrics(self) -> bytes:
        """This worker's Prometheus text."""
        started = self.in_flight()
        self._running.labels(self.kind).set(len(started))
        self._oldest.labels(self.kind).set(time.time() - min(started) if started else 0.0)
        self._beat.labels(self.kind).set(time.monotonic() - self._tick)
        return generate_latest(self.registry)


class ProbeHandler(BaseHTTPRequestHandler):
    """A handler for probe and metrics endpoints: one `send`, and no log line per request (they come
    every few seconds)."""

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Answer with `body`."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def serve(health: WorkerHealth, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 - a pod's probe port
    """Serve `health` on `host:port` from a daemon thread."""

    class Handler(ProbeHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/livez":
                ok, why = health.live()
                self.send(200 if ok else 503, json.dumps({"live": ok, "reason": why}).encode())
            elif self.path == "/readyz":
                ready = health.ready and not health.draining
                why = "draining" if health.draining else "ok" if ready else "starting"
                self.send(200 if ready else 503, json.dumps({"ready": ready, "reason": why}).encode())
            elif self.path == "/metrics":
                self.send(200, health.metrics(), CONTENT_TYPE_LATEST)
            else:
                self.send(404, b'{"error": "not found: /livez, /readyz, /metrics"}')

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="slmflow-health", daemon=True).start()
    log.info("health endpoint on %s:%d (/livez, /readyz, /metrics)", host, port)
    return server
