"""The dataset store: skill runs (the training data), adapter routes, shadow calls, promotions.

One schema on SQLite (the embedded default, `sqlite:///FILE`) or PostgreSQL (fleets,
`postgresql://...`). Everything written here has been redacted by the caller (`Learning`); the
store never sees clear-text personal data. Calls are synchronous and short: async code runs them
with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from slmflow.errors import EndpointUnreachable, SettingsError
from slmflow.redaction import mask_url

__all__ = [
    "AdapterEvent",
    "AuditRecord",
    "DatasetStore",
    "FloorRecord",
    "Route",
    "RunRecord",
    "ShadowCall",
    "VersionFigures",
]

Source = Literal["slm", "llm", "human"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS slmflow_skill_runs (
        id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, skill TEXT NOT NULL, job_id TEXT,
        step TEXT, slm_model TEXT, source TEXT, status TEXT NOT NULL, reasons TEXT NOT NULL,
        input_hash TEXT NOT NULL, messages TEXT NOT NULL, tools TEXT, attempts TEXT NOT NULL,
        answer TEXT, confidence DOUBLE PRECISION, rationale TEXT, meta TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS slmflow_skill_runs_skill ON slmflow_skill_runs (skill, created_at)",
    """CREATE TABLE IF NOT EXISTS slmflow_routes (
        skill TEXT PRIMARY KEY, current TEXT, previous TEXT, candidate TEXT,
        shadow_rate DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    # v2: confidences and the input, so the gate can calibrate a candidate's floor on its shadow calls.
    """CREATE TABLE IF NOT EXISTS slmflow_shadow_calls_v2 (
        id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, skill TEXT NOT NULL,
        current TEXT NOT NULL, candidate TEXT NOT NULL, input_hash TEXT NOT NULL, agree INTEGER NOT NULL,
        current_ok INTEGER NOT NULL, candidate_ok INTEGER NOT NULL, current_confidence DOUBLE PRECISION,
        candidate_confidence DOUBLE PRECISION, final_source TEXT, current_right INTEGER, candidate_right INTEGER)""",
    "CREATE INDEX IF NOT EXISTS slmflow_shadow_calls_v2_pair ON slmflow_shadow_calls_v2 (skill, candidate, current)",
    """CREATE TABLE IF NOT EXISTS slmflow_adapter_events (
        id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, skill TEXT NOT NULL, action TEXT NOT NULL,
        adapter TEXT, previous TEXT, figures TEXT NOT NULL, note TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS slmflow_floors (
        id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, skill TEXT NOT NULL, model TEXT NOT NULL,
        constraint_id TEXT NOT NULL, signal TEXT NOT NULL, target DOUBLE PRECISION NOT NULL,
        floor DOUBLE PRECISION, figures TEXT NOT NULL, data_hash TEXT NOT NULL, input_hashes TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS slmflow_floors_key ON slmflow_floors (skill, model, constraint_id, created_at)",
    """CREATE TABLE IF NOT EXISTS slmflow_audits (
        id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, skill TEXT NOT NULL, model TEXT NOT NULL,
        input_hash TEXT NOT NULL, confidence DOUBLE PRECISION, agree INTEGER, llm_answer TEXT)""",
    "CREATE INDEX IF NOT EXISTS slmflow_audits_key ON slmflow_audits (skill, model, created_at)",
]


class RunRecord(BaseModel):
    """One skill run as kept for training: the prompt, every attempt, and who answered."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=time.time)
    skill: str
    job_id: str | None = None
    step: str | None = None
    slm_model: str | None = None
    """The model or adapter that served the SLM tier: escalation rates are tracked per version."""
    source: Source | None = None
    """Who gave the kept answer; None when nobody did (the run ended in review)."""
    status: Literal["ok", "needs_review"]
    reasons: list[str] = Field(default_factory=list)
    """Escalation reasons, in order."""
    input_hash: str
    """Hash of the skill's input before redaction: the same ticket twice is one training example."""
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    answer: Any = None
    confidence: float | None = None
    rationale: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Route(BaseModel):
    """Which adapter serves a skill, the one before it, and a candidate in shadow."""

    skill: str
    current: str | None = None
    previous: str | None = None
    candidate: str | None = None
    shadow_rate: float = 0.0


class ShadowCall(BaseModel):
    """One live call answered by the current model and, beside it, by the candidate."""

    skill: str
    current: str
    candidate: str
    input_hash: str = ""
    agree: bool
    current_ok: bool
    """The current model's first answer was kept: it passed its checks and its serving floor."""
    candidate_ok: bool
    """The candidate's answer passed its checks (no floor: the gate calibrates the candidate's own)."""
    current_confidence: float | None = None
    candidate_confidence: float | None = None
    final_source: str | None = None
    """Who gave the reference both answers are scored on: the LLM (the run's escalation, or an audit
    of a kept SLM answer); None: there is no reference."""
    current_right: bool | None = None
    """The current model's first answer passed and equals the reference (None: no reference)."""
    candidate_right: bool | None = None
    """The candidate's answer passed its checks and equals the reference (None: no reference)."""


class AdapterEvent(BaseModel):
    """A route change (or a refused one) and the figures that justified it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=time.time)
    skill: str
    action: Literal["shadow", "promote", "refuse", "rollback", "switch"]
    adapter: str | None
    previous: str | None
    figures: dict[str, Any] = Field(default_factory=dict)
    note: str = ""


class FloorRecord(BaseModel):
    """One calibration of a skill's floor on one SLM model or adapter, under one constraint.

    `floor` None: no floor met the target (too few labels, or the model is not good enough).
    `input_hashes` name the inputs it was calibrated on (so an eval on the same inputs is flagged).
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=time.time)
    skill: str
    model: str
    constraint_id: str
    signal: str
    target: float
    floor: float | None
    figures: dict[str, Any] = Field(default_factory=dict)
    data_hash: str
    input_hashes: list[str] = Field(default_factory=list)


class AuditRecord(BaseModel):
    """A kept SLM answer also answered by the LLM: whether they agree (None: the LLM gave no checked answer)."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = Field(default_factory=time.time)
    skill: str
    model: str
    input_hash: str
    confidence: float | None = None
    agree: bool | None = None
    llm_answer: Any = None


class VersionFigures(BaseModel):
    """A skill's runs on one SLM model version and how many escalated."""

    slm_model: str
    runs: int
    escalated: int

    @property
    def escalation_rate(self) -> float:
        """Escalated runs over runs."""
        return self.escalated / self.runs if self.runs else 0.0


class DatasetStore:
    """The dataset store behind `url`; tables are created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None
        self._postgres = url.startswith(("postgresql://", "postgres://"))
        if not self._postgres and not url.startswith("sqlite:///"):
            raise SettingsError(
                f"SLMFLOW_DATASET_URL={mask_url(url)!r}: expected 'sqlite:///FILE' or 'postgresql://...'"
            )

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None on PostgreSQL."""
        return None if self._postgres else Path(self.url.removeprefix("sqlite:///")).expanduser()

    def exists(self) -> bool:
        """Whether there may be anything to read (a missing SQLite file holds nothing)."""
        return self._postgres or bool(self.path and self.path.exists())

    def _connect(self) -> Any:
        conn: Any
        if self._postgres:
            import psycopg

            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                raise EndpointUnreachable(
                    mask_url(f"cannot reach the dataset store at {self.url}: fix SLMFLOW_DATASET_URL ({exc})")
                ) from None
        else:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            yield self._conn

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._postgres:
            sql = sql.replace("?", "%s")
        for attempt in (1, 2):
            with self._cursor() as conn:
                try:
                    cursor = conn.execute(sql, tuple(params))
                    return list(cursor.fetchall()) if cursor.description else []
                except Exception as exc:
                    if attempt == 2 or not self._lost(conn, exc):
                        raise
                    self._conn = None  # the server restarted or dropped us: connect again, once
        raise AssertionError("unreachable")

    def _lost(self, conn: Any, exc: Exception) -> bool:
        if not self._postgres:
            return False
        import psycopg

        return bool(conn.closed) or isinstance(exc, psycopg.OperationalError)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- skill runs ------------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> None:
        """Keep one (already redacted) skill run."""
        self._execute(
            "INSERT INTO slmflow_skill_runs (id, created_at, skill, job_id, step, slm_model, source, status, reasons,"
            " input_hash, messages, tools, attempts, answer, confidence, rationale, meta)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.created_at, run.skill, run.job_id, run.step, run.slm_model, run.source, run.status,
             json.dumps(run.reasons), run.input_hash, json.dumps(run.messages),
             json.dumps(run.tools) if run.tools is not None else None, json.dumps(run.attempts),
             json.dumps(run.answer), run.confidence, run.rationale, json.dumps(run.meta)),
        )  # fmt: skip

    def runs(self, skill: str) -> list[RunRecord]:
        """A skill's runs, oldest first."""
        rows = self._execute(
            "SELECT id, created_at, skill, job_id, step, slm_model, source, status, reasons, input_hash, messages,"
            " tools, attempts, answer, confidence, rationale, meta FROM slmflow_skill_runs"
            " WHERE skill = ? ORDER BY created_at, id",
            (skill,),
        )
        return [
            RunRecord(
                id=r[0],
                created_at=r[1],
                skill=r[2],
                job_id=r[3],
                step=r[4],
                slm_model=r[5],
                source=r[6],
                status=r[7],
                reasons=json.loads(r[8]),
                input_hash=r[9],
                messages=json.loads(r[10]),
                tools=json.loads(r[11]) if r[11] else None,
                attempts=json.loads(r[12]),
                answer=json.loads(r[13]),
                confidence=r[14],
                rationale=r[15],
                meta=json.loads(r[16]),
            )  # fmt: skip
            for r in rows
        ]

    def version_figures(self, skill: str) -> list[VersionFigures]:
        """Runs and escalations of `skill` per SLM model version, most used first."""
        rows = self._execute(
            "SELECT slm_model, COUNT(*), SUM(CASE WHEN source = 'slm' THEN 0 ELSE 1 END) FROM slmflow_skill_runs"
            " WHERE skill = ? AND slm_model IS NOT NULL GROUP BY slm_model ORDER BY COUNT(*) DESC",
            (skill,),
        )
        return [VersionFigures(slm_model=r[0], runs=int(r[1]), escalated=int(r[2] or 0)) for r in rows]

    # -- routes ----------------------------------------------------------------------------------

    def route(self, skill: str) -> Route:
        """The skill's route (all empty when none was ever set)."""
        rows = self._execute(
            "SELECT current, previous, candidate, shadow_rate FROM slmflow_routes WHERE skill = ?", (skill,)
        )
        if not rows:
            return Route(skill=skill)
        current, previous, candidate, rate = rows[0]
        return Route(skill=skill, current=current, previous=previous, candidate=candidate, shadow_rate=rate)

    def routes(self) -> list[Route]:
        """Every skill's route."""
        rows = self._execute(
            "SELECT skill, current, previous, candidate, shadow_rate FROM slmflow_routes ORDER BY skill"
        )
        return [Route(skill=r[0], current=r[1], previous=r[2], candidate=r[3], shadow_rate=r[4]) for r in rows]

    def set_route(self, route: Route, event: AdapterEvent) -> None:
        """Write a route and the event that changed it, together."""
        with self._cursor() as conn:
            if self._postgres:
                with conn.transaction():
                    self._write_route(conn, route, event, "%s")
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._write_route(conn, route, event, "?")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

    def _write_route(self, conn: Any, route: Route, event: AdapterEvent, mark: str) -> None:
        values = (route.skill, route.current, route.previous, route.candidate, route.shadow_rate, time.time())
        conn.execute(
            "INSERT INTO slmflow_routes (skill, current, previous, candidate, shadow_rate, updated_at)"
            f" VALUES ({', '.join([mark] * 6)}) ON CONFLICT (skill) DO UPDATE SET current = excluded.current,"
            " previous = excluded.previous, candidate = excluded.candidate, shadow_rate = excluded.shadow_rate,"
            " updated_at = excluded.updated_at",
            values,
        )
        conn.execute(_INSERT_EVENT.replace("?", mark), _event_row(event))

    def add_event(self, event: AdapterEvent) -> None:
        """Record an event that changed no route (a refused promotion)."""
        self._execute(_INSERT_EVENT, _event_row(event))

    def events(self, skill: str) -> list[AdapterEvent]:
        """The skill's adapter events, oldest first."""
        rows = self._execute(
            "SELECT id, created_at, skill, action, adapter, previous, figures, note FROM slmflow_adapter_events"
            " WHERE skill = ? ORDER BY created_at, id",
            (skill,),
        )
        return [
            AdapterEvent(
                id=r[0],
                created_at=r[1],
                skill=r[2],
                action=r[3],
                adapter=r[4],
                previous=r[5],
                figures=json.loads(r[6]),
                note=r[7],
            )  # fmt: skip
            for r in rows
        ]

    # -- floors ----------------------------------------------------------------------------------

    def add_floor(self, record: FloorRecord) -> None:
        """Keep a calibration (a new version; older ones stay for the record)."""
        self._execute(
            "INSERT INTO slmflow_floors (id, created_at, skill, model, constraint_id, signal, target, floor, figures,"
            " data_hash, input_hashes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.created_at, record.skill, record.model, record.constraint_id, record.signal,
             record.target, record.floor, json.dumps(record.figures), record.data_hash,
             json.dumps(record.input_hashes)),
        )  # fmt: skip

    def floors(self, skill: str, model: str | None = None) -> list[FloorRecord]:
        """A skill's calibrations (on one model when given), newest first."""
        where, params = _of(skill, model)
        rows = self._execute(
            "SELECT id, created_at, skill, model, constraint_id, signal, target, floor, figures, data_hash,"
            f" input_hashes FROM slmflow_floors WHERE {where} ORDER BY created_at DESC, id",
            params,
        )
        return [
            FloorRecord(
                id=r[0],
                created_at=r[1],
                skill=r[2],
                model=r[3],
                constraint_id=r[4],
                signal=r[5],
                target=r[6],
                floor=r[7],
                figures=json.loads(r[8]),
                data_hash=r[9],
                input_hashes=json.loads(r[10]),
            )  # fmt: skip
            for r in rows
        ]

    # -- audits ----------------------------------------------------------------------------------

    def add_audit(self, audit: AuditRecord) -> None:
        """Keep one audit (the LLM's answer is redacted by the caller)."""
        self._execute(
            "INSERT INTO slmflow_audits (id, created_at, skill, model, input_hash, confidence, agree, llm_answer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (audit.id, audit.created_at, audit.skill, audit.model, audit.input_hash, audit.confidence,
             _bit(audit.agree), json.dumps(audit.llm_answer)),
        )  # fmt: skip

    def audits(self, skill: str, model: str | None = None, limit: int = 200) -> list[AuditRecord]:
        """A skill's latest audits (on one model when given), newest first."""
        where, params = _of(skill, model)
        rows = self._execute(
            "SELECT id, created_at, skill, model, input_hash, confidence, agree, llm_answer FROM slmflow_audits"
            f" WHERE {where} ORDER BY created_at DESC, id LIMIT {int(limit)}",
            params,
        )
        return [
            AuditRecord(
                id=r[0],
                created_at=r[1],
                skill=r[2],
                model=r[3],
                input_hash=r[4],
                confidence=r[5],
                agree=_flag(r[6]),
                llm_answer=json.loads(r[7]) if r[7] else None,
            )  # fmt: skip
            for r in rows
        ]

    # -- shadow ----------------------------------------------------------------------------------

    def add_shadow_call(self, call: ShadowCall) -> None:
        """Keep one shadow comparison."""
        self._execute(
            "INSERT INTO slmflow_shadow_calls_v2 (id, created_at, skill, current, candidate, input_hash, agree,"
            " current_ok, candidate_ok, current_confidence, candidate_confidence, final_source, current_right,"
            " candidate_right) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, time.time(), call.skill, call.current, call.candidate, call.input_hash,
             int(call.agree), int(call.current_ok), int(call.candidate_ok), call.current_confidence,
             call.candidate_confidence, call.final_source, _bit(call.current_right), _bit(call.candidate_right)),
        )  # fmt: skip

    def shadow_calls(self, skill: str, candidate: str, current: str) -> list[ShadowCall]:
        """Shadow comparisons of `candidate` against `current` on `skill`, oldest first."""
        rows = self._execute(
            "SELECT input_hash, agree, current_ok, candidate_ok, current_confidence, candidate_confidence,"
            " final_source, current_right, candidate_right FROM slmflow_shadow_calls_v2"
            " WHERE skill = ? AND candidate = ? AND current = ? ORDER BY created_at",
            (skill, candidate, current),
        )
        return [
            ShadowCall(
                skill=skill,
                current=current,
                candidate=candidate,
                input_hash=r[0],
                agree=bool(r[1]),
                current_ok=bool(r[2]),
                candidate_ok=bool(r[3]),
                current_confidence=r[4],
                candidate_confidence=r[5],
                final_source=r[6],
                current_right=_flag(r[7]),
                candidate_right=_flag(r[8]),
            )  # fmt: skip
            for r in rows
        ]


_INSERT_EVENT = (
    "INSERT INTO slmflow_adapter_events (id, created_at, skill, action, adapter, previous, figures, note)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _event_row(event: AdapterEvent) -> tuple[Any, ...]:
    return (event.id, event.created_at, event.skill, event.action, event.adapter, event.previous,
            json.dumps(event.figures), event.note)  # fmt: skip


def _of(skill: str, model: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause and parameters of a skill's rows, on one model when given."""
    return ("skill = ?", (skill,)) if model is None else ("skill = ? AND model = ?", (skill, model))


def _bit(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)
