"""The fleet's demand, read exactly from the job store: what an autoscaler scales jobs workers on.

A Celery queue's list length counts only messages nobody has taken yet: a jobs worker with 200
slots can hold 200 jobs while the list reads 0, and an autoscaler reading it scales that worker
away mid-job. The job store knows better: every queued or running job is in its `active` set, and
a running one holds a lease. So `active = queued + running` is exact, whoever holds the message,
and `demand = active / slots` (the live jobs workers' slots, from their heartbeats) is how many
workers' worth of work there is.

`slmflow metrics` serves it as Prometheus text (`/metrics`) and as JSON (`/metrics.json`, which
KEDA's metrics-api scaler reads directly).
"""

from __future__ import annotations

import time

import redis
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel

from slmflow.fleet import keys, lua
from slmflow.fleet.queues import JOBS_QUEUE, RESUME_QUEUE, TOOLS_QUEUE
from slmflow.settings import Settings

__all__ = ["Demand", "DemandReader", "JobsDemand", "WorkersDemand"]


class JobsDemand(BaseModel):
    """Jobs not yet ended: waiting (in a queue, reserved, or given back) and running (leased)."""

    queued: int
    running: int
    active: int
    oldest_age_s: float
    """Age of the oldest active job (0 with none)."""
    lease_oldest_renewal_s: float
    """Longest time since a held lease was renewed (heartbeats beat every second or so; a value
    near `SLMFLOW_LEASE_TTL_S` means a worker is about to lose its jobs)."""


class WorkersDemand(BaseModel):
    """The live jobs workers (those whose heartbeat entry has not expired) and their slots."""

    jobs: int
    slots: int


class Demand(BaseModel):
    """What `/metrics.json` serves."""

    jobs: JobsDemand
    workers: WorkersDemand
    tools: dict[str, dict[str, int]]
    """`{"queued": {queue: messages waiting}}` for the tools queues (a list length: tools workers
    prefetch one message per slot, so this undercounts by at most their slots)."""
    queues: dict[str, int]
    """Messages waiting in the jobs and resume queues (for comparison: not the demand)."""
    demand: float | None
    """`jobs.active / workers.slots`: how many workers' worth of jobs there are (None with no workers)."""


class DemandReader:
    """Reads `Demand` from the job store (one script for the jobs, one pipeline for the queues)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=2,
                                          socket_timeout=10)  # fmt: skip
        self._demand = self.redis.register_script(lua.DEMAND)
        self.tool_queues = sorted({TOOLS_QUEUE, *settings.tool_queues.values()})

    def read(self) -> Demand:
        """The demand now (raises `redis.RedisError` when the store does not answer)."""
        now = time.time()
        queued, running, oldest, least_ttl, slots, workers = self._demand(
            keys=[keys.ACTIVE, keys.JOBS, keys.WORKERS], args=[keys.lease(""), keys.worker(""), int(now * 1000)]
        )
        pipe = self.redis.pipeline(transaction=False)
        names = [JOBS_QUEUE, RESUME_QUEUE, *self.tool_queues]
        for name in names:
            pipe.llen(name)
        lengths = dict(zip(names, pipe.execute(), strict=True))
        lease_ms = self.settings.lease_ttl_s * 1000
        active = int(queued) + int(running)
        return Demand(
            jobs=JobsDemand(
                queued=int(queued),
                running=int(running),
                active=active,
                oldest_age_s=round(now - float(oldest), 3) if oldest else 0.0,
                lease_oldest_renewal_s=round(max(0.0, lease_ms - int(least_ttl)) / 1000, 3)
                if int(least_ttl) >= 0
                else 0.0,
            ),  # fmt: skip
            workers=WorkersDemand(jobs=int(workers), slots=int(slots)),
            tools={"queued": {name: lengths[name] for name in self.tool_queues}},
            queues={name: lengths[name] for name in (JOBS_QUEUE, RESUME_QUEUE)},
            demand=round(active / int(slots), 3) if int(slots) else None,
        )

    def prometheus(self, demand: Demand) -> bytes:
        """`demand` as Prometheus text."""
        registry = CollectorRegistry()

        def gauge(name: str, text: str, value: float) -> None:
            Gauge(name, text, registry=registry).set(value)

        jobs = demand.jobs
        gauge("slmflow_jobs_queued", "Jobs waiting: in a queue, reserved by a worker, or given back.", jobs.queued)
        gauge("slmflow_jobs_running", "Jobs running (their lease is held).", jobs.running)
        gauge("slmflow_jobs_active", "Jobs queued or running: the autoscaler's numerator.", jobs.active)
        gauge("slmflow_job_oldest_age_seconds", "Age of the oldest active job.", jobs.oldest_age_s)
        gauge("slmflow_lease_oldest_renewal_age_seconds", "Longest time since a held lease was renewed.",
              jobs.lease_oldest_renewal_s)  # fmt: skip
        gauge("slmflow_jobs_slots", "Slots of the live jobs workers.", demand.workers.slots)
        gauge("slmflow_jobs_workers", "Live jobs workers.", demand.workers.jobs)
        if demand.demand is not None:
            gauge("slmflow_jobs_demand", "Active jobs per slot of the live jobs workers.", demand.demand)
        tools = Gauge("slmflow_tools_queued", "Tool calls waiting in a tools queue.", ["queue"], registry=registry)
        for name, length in demand.tools["queued"].items():
            tools.labels(name).set(length)
        return generate_latest(registry)
