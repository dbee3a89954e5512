"""The fleet's Redis key schema: every key slmflow writes, in one place.

All keys live under `slmflow:` and expire after `SLMFLOW_JOB_TTL_S` unless said otherwise.

| key | type | holds |
|---|---|---|
| `job:{id}` | hash | `status` (compare-and-set by scripts), `data` (the `JobRecord` JSON), `cancelled_at` |
| `events:{id}` | stream | the job's events, append-only |
| `idem:{key}` | string | `{job id}|{fingerprint}` of the first submit under an idempotency key |
| `jobs` | zset | job ids by creation time (for `list`) |
| `active` | zset | every `queued` or `running` job, scored by when the reconciler should look at it next |
| `fence:{id}` | string | the job's fencing counter (never expires while the job lives) |
| `lease:{id}` | string | the current lease's fencing token, expiring after `SLMFLOW_LEASE_TTL_S` |
| `stalls:{id}` | string | runs in a row that made no progress (dead-letter counter) |
| `cancel:{id}` | string | a cancellation request for a running job |
| `call:{key}` | hash | one tool call: tool, arguments, state (`recorded` → `running` → `done`/`unknown`) |
| `calldone:{key}` | list | wake-up for the job waiting on the call (expires after a minute) |
| `memo:{id}` | hash | skill results a step must not recompute when it re-runs (a paused step) |
| `catalog:{graph}` | string | a graph a live worker serves, refreshed while the worker lives |
| `reconciler` | string | the elected reconciler's id, expiring unless renewed |
| `workers` | zset | live jobs workers by name, scored by when their entry expires (ms) |
| `worker:{name}` | hash | a jobs worker's `slots`, `running`, `host`, `pid`; expires unless its heartbeat renews it |

Celery's own keys (the queue lists named after the queues, kombu's `unacked` hash) live in the
same database; the reconciler reads them and never writes them.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE",
    "JOBS",
    "P",
    "RECONCILER",
    "UNACKED",
    "UNACKED_INDEX",
    "WORKERS",
    "call",
    "call_done",
    "cancel",
    "catalog",
    "catalog_pattern",
    "events",
    "fence",
    "idem",
    "job",
    "lease",
    "memo",
    "stalls",
    "worker",
]

P = "slmflow:"
JOBS = f"{P}jobs"
ACTIVE = f"{P}active"
RECONCILER = f"{P}reconciler"
WORKERS = f"{P}workers"
UNACKED = "unacked"
"""kombu's Redis transport: delivered, not yet acknowledged messages (delivery tag → message)."""
UNACKED_INDEX = "unacked_index"
"""kombu's Redis transport: delivery tag → when it was delivered (seconds since the epoch)."""


def job(job_id: str) -> str:
    """The job's record hash."""
    return f"{P}job:{job_id}"


def events(job_id: str) -> str:
    """The job's event stream."""
    return f"{P}events:{job_id}"


def idem(idempotency_key: str) -> str:
    """The first job submitted under this idempotency key."""
    return f"{P}idem:{idempotency_key}"


def fence(job_id: str) -> str:
    """The job's fencing counter."""
    return f"{P}fence:{job_id}"


def lease(job_id: str) -> str:
    """The job's current lease."""
    return f"{P}lease:{job_id}"


def stalls(job_id: str) -> str:
    """Runs of the job in a row that made no progress."""
    return f"{P}stalls:{job_id}"


def cancel(job_id: str) -> str:
    """A request to cancel the running job."""
    return f"{P}cancel:{job_id}"


def call(key: str) -> str:
    """One tool call's record."""
    return f"{P}call:{key}"


def call_done(key: str) -> str:
    """The wake-up list of a tool call."""
    return f"{P}calldone:{key}"


def memo(job_id: str) -> str:
    """The job's step memo."""
    return f"{P}memo:{job_id}"


def catalog(graph: str) -> str:
    """A served graph's catalog entry."""
    return f"{P}catalog:{graph}"


def worker(name: str) -> str:
    """A live jobs worker's entry."""
    return f"{P}worker:{name}"


def catalog_pattern() -> str:
    """Every catalog entry."""
    return f"{P}catalog:*"
