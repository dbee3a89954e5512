"""Embedded jobs that outlive their process: the CLI's records and step memos in a SQLite file.

`slmflow run` keeps each job's record (graph, input, status, last result) and the memo of its paused
steps here, and its LangGraph checkpoints in a SQLite checkpointer beside it, both in the cache
directory. So `slmflow run GRAPH --job-id ID` resumes an interrupted job, and `slmflow review` and
`slmflow approve` answer a paused one, from another process. The library's default stays in memory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmflow.errors import UsageError
from slmflow.outcomes import JobResult, JobStatus
from slmflow.settings import Settings

__all__ = ["LocalJob", "LocalJobs", "SqliteMemo", "local_checkpoint_url"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, graph TEXT NOT NULL, input TEXT NOT NULL,
       config TEXT NOT NULL, status TEXT NOT NULL, result TEXT, created REAL NOT NULL, updated REAL NOT NULL,
       pid INTEGER)""",
    """CREATE TABLE IF NOT EXISTS memo (job_id TEXT NOT NULL, step TEXT NOT NULL, result TEXT NOT NULL,
       PRIMARY KEY (job_id, step))""",
)


def local_checkpoint_url(settings: Settings) -> str:
    """The checkpointer of embedded CLI jobs: the one the settings name, else a SQLite file in the cache."""
    if "checkpoint_url" in settings.model_fields_set and settings.checkpoint_url != "memory":
        return settings.checkpoint_url
    return f"sqlite:///{settings.cache_dir / 'jobs' / 'checkpoints.db'}"


@dataclass(frozen=True)
class LocalJob:
    """An embedded job as kept: what it runs on, and where it is."""

    id: str
    graph: str
    input: dict[str, Any]
    config: dict[str, Any]
    status: JobStatus
    result: JobResult | None
    pid: int | None = None
    """The process that runs (or last ran) it."""

    def running_elsewhere(self) -> bool:
        """Whether another live process is running this job now."""
        if self.status != JobStatus.RUNNING or self.pid is None or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class LocalJobs:
    """The embedded jobs of one cache directory (`<cache>/jobs/jobs.db`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._db() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            if "pid" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
                db.execute("ALTER TABLE jobs ADD COLUMN pid INTEGER")  # a file from before pids were kept

    @classmethod
    def of(cls, settings: Settings) -> LocalJobs:
        """The store in the settings' cache directory."""
        return cls(settings.cache_dir / "jobs" / "jobs.db")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def get(self, job_id: str) -> LocalJob | None:
        """The job kept under `job_id`, if any."""
        with self._db() as db:
            row = db.execute("SELECT id, graph, input, config, status, result, pid FROM jobs WHERE id = ?",
                             (job_id,)).fetchone()  # fmt: skip
        if row is None:
            return None
        result = JobResult.model_validate_json(row[5]) if row[5] else None
        return LocalJob(row[0], row[1], json.loads(row[2]), json.loads(row[3]), JobStatus(row[4]), result, row[6])

    def start(self, job_id: str, graph: str, data: dict[str, Any], config: dict[str, Any]) -> None:
        """Keep a new job as `running` (before its first step, so an interrupted run can resume)."""
        now = time.time()
        with self._db() as db:
            row = (job_id, graph, json.dumps(data), json.dumps(config), JobStatus.RUNNING.value, now, now, os.getpid())
            try:
                db.execute("INSERT INTO jobs (id, graph, input, config, status, created, updated, pid)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)  # fmt: skip
            except sqlite3.IntegrityError:
                raise UsageError(f"job {job_id} was just started by another process: pick a new --job-id") from None

    def claim(self, job_id: str, status: JobStatus) -> bool:
        """Run the job again here if it is still `status` (a resumption); False if another process
        took it meanwhile: only one process resumes a job."""
        with self._db() as db:
            taken = db.execute("UPDATE jobs SET status = ?, pid = ?, updated = ? WHERE id = ? AND status = ?",
                               (JobStatus.RUNNING.value, os.getpid(), time.time(), job_id, status.value))  # fmt: skip
            return taken.rowcount == 1

    def save(self, result: JobResult) -> None:
        """Keep how the job's run ended (or paused)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET status = ?, result = ?, updated = ? WHERE id = ?",
                       (result.status.value, result.model_dump_json(), time.time(), result.job_id))  # fmt: skip

    def memo(self, job_id: str) -> SqliteMemo:
        """The step memo of `job_id` (paused steps' results: a resumed step asks no model again)."""
        return SqliteMemo(self, job_id)


@dataclass(frozen=True)
class SqliteMemo:
    """A `StepMemo` in the local jobs file."""

    jobs: LocalJobs
    job_id: str

    async def recall(self, step: str) -> dict[str, Any] | None:
        """The remembered result of `step`, if any."""
        with self.jobs._db() as db:
            row = db.execute("SELECT result FROM memo WHERE job_id = ? AND step = ?", (self.job_id, step)).fetchone()
        return json.loads(row[0]) if row else None

    async def remember(self, step: str, result: dict[str, Any]) -> None:
        """Remember the result of `step`."""
        with self.jobs._db() as db:
            db.execute("INSERT OR REPLACE INTO memo (job_id, step, result) VALUES (?, ?, ?)",
                       (self.job_id, step, json.dumps(result)))  # fmt: skip
