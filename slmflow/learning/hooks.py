"""What the cascade asks of the learning loop: which adapter serves a skill, shadow, recording.

`Learning` is built from settings with the endpoints (`Endpoints.learning`). It reads a skill's
route (current adapter, candidate in shadow) from the dataset store, cached for
`SLMFLOW_ROUTE_TTL_S`; with `SLMFLOW_RECORD=true` it keeps every skill run, redacted. The store
failing never fails a job: the run goes on with the base model and the failure is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slmflow import telemetry
from slmflow.answers import Judged, answer_key, input_hash
from slmflow.calibration import constraint_id, precision_upper_bound
from slmflow.errors import ProjectError
from slmflow.hooks import Floor, Route
from slmflow.learning.floors import FLOORS_FILE, read_floors_file
from slmflow.learning.store import AuditRecord, DatasetStore, FloorRecord, RunRecord, ShadowCall
from slmflow.project import find_project
from slmflow.prompts import render_messages
from slmflow.redaction import Redactor, redact, redact_value
from slmflow.results import SkillResult
from slmflow.settings import Settings
from slmflow.skills import Skill
from slmflow.tools import ToolRegistry
from slmflow.verdicts import constraint

__all__ = ["AUDIT_WINDOW", "Learning", "audit_alarm", "project_floors_file"]

log = logging.getLogger("slmflow.learning")


class Learning:
    """Routes, shadow sampling and run recording over one dataset store (the engine's `CascadeHooks`)."""

    def __init__(
        self,
        store: DatasetStore,
        *,
        record: bool = False,
        rationale: bool = False,
        route_ttl_s: float = 5.0,
        redactor: Redactor = redact,
        follow_routes: bool = True,
        floors_file: Path | None = None,
        audit_rate: float = 0.0,
    ) -> None:
        self.store = store
        self.floors_file = floors_file
        self.audit_rate = audit_rate
        self.record = record
        self.follow_routes = follow_routes
        self.rationale = rationale and record
        self.route_ttl_s = route_ttl_s
        self.redactor = redactor
        self._routes: dict[str, tuple[float, Route]] = {}
        self._floors: dict[tuple[str, str], tuple[float, Floor | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Learning:
        """The learning hooks the settings describe (routes are read even when not recording)."""
        return cls(
            DatasetStore(settings.dataset_store_url),
            record=settings.record,
            rationale=settings.record_rationale,
            route_ttl_s=settings.route_ttl_s,
            floors_file=project_floors_file(settings),
            audit_rate=settings.effective_audit_rate,
        )

    async def route(self, skill: str) -> Route:
        """The skill's route; an unreadable store means the base model, and is logged."""
        if not self.follow_routes:
            return Route(skill=skill)
        cached = self._routes.get(skill)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.route_ttl_s:
            return cached[1]
        route = Route(skill=skill)
        if self.store.exists():
            try:
                stored = await asyncio.to_thread(self.store.route, skill)
                route = Route(skill=skill, current=stored.current, candidate=stored.candidate,
                              shadow_rate=stored.shadow_rate)  # fmt: skip
            except Exception as exc:  # the store is an optimisation here, never a reason to fail a job
                log.warning("cannot read the route of %s from the dataset store (%s): using the base model", skill, exc)
        self._routes[skill] = (now, route)
        return route

    async def floor(self, skill: Skill, model: str) -> Floor | None:
        """The newest calibration of `skill` on `model` under its current constraint: from the
        dataset store, else from the project's floors file; None when there is none."""
        key = (skill.name, model)
        cached = self._floors.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.route_ttl_s:
            return cached[1]
        wanted = constraint_id(skill)
        found: Floor | None = None
        if self.store.exists():
            try:
                records = await asyncio.to_thread(self.store.floors, skill.name, model)
            except Exception as exc:  # as with routes: the store failing never fails a job
                log.warning("cannot read the floors of %s from the dataset store (%s)", skill.name, exc)
                records = []
            found = next((_floor(r, f"store:{r.id}") for r in records if r.constraint_id == wanted), None)
        if found is None and self.floors_file is not None:
            records = read_floors_file(self.floors_file)
            mine = [r for r in records if (r.skill, r.model, r.constraint_id) == (skill.name, model, wanted)]
            found = _floor(mine[0], f"file:{self.floors_file.name}") if mine else None
        self._floors[key] = (now, found)
        return found

    async def keep_audit(self, skill: Skill, model: str, values: Mapping[str, Any], confidence: float | None,
                         agree: bool | None, llm_answer: Any) -> None:  # fmt: skip
        """Keep an audit; when the skill has a target, alarm (log line and metric) once the upper
        95% bound on agreement over the last AUDIT_WINDOW audits falls below it."""
        audit = AuditRecord(skill=skill.name, model=model, input_hash=input_hash(values), confidence=confidence,
                            agree=agree, llm_answer=self.redacted(llm_answer))  # fmt: skip
        reason = None
        try:
            await asyncio.to_thread(self.store.add_audit, audit)
            if skill.target_precision is not None:
                recent = await asyncio.to_thread(self.store.audits, skill.name, model, AUDIT_WINDOW)
                reason = audit_alarm(recent, skill.target_precision)
        except Exception as exc:
            log.warning("could not record an audit of %s: %s", skill.name, exc)
        if reason is not None:
            log.warning("precision alarm for %s on %s: %s", skill.name, model, reason)
        telemetry.record_audit(skill.name, model, agree, reason is not None)

    def redacted(self, value: Any) -> Any:
        """`value` with every string redacted."""
        return redact_value(value, self.redactor)

    async def keep_run(
        self,
        skill: Skill,
        values: Mapping[str, Any],
        messages: list[dict[str, Any]],
        tools: ToolRegistry | None,
        result: SkillResult,
        *,
        job_id: str,
        step: str | None,
        slm_model: str,
        rationale: str | None = None,
    ) -> None:
        """Store one cascade run for training, redacted: prompt, every attempt, who answered."""
        await self.keep(
            RunRecord(
                skill=skill.name,
                job_id=job_id,
                step=step,
                slm_model=slm_model,
                source=result.tier.value if result.ok and result.tier else None,
                status=result.status,
                reasons=[str(e.reason) for e in result.escalations],
                input_hash=input_hash(values),
                messages=self.redacted(messages),
                tools=constraint(skill, "vllm", tools).get("tools"),
                attempts=self.redacted([a.model_dump(mode="json") for a in result.attempts]),
                answer=self.redacted(json.loads(answer_key(result.answer))) if result.ok else None,
                confidence=result.confidence,
                rationale=self.redacted(rationale) if rationale else None,
                meta={"narrowed": self.redacted(result.narrowed)} if result.narrowed else {},
            )
        )

    async def keep(self, run: RunRecord) -> None:
        """Store a run (the caller has redacted it); a store failure is logged, not raised."""
        try:
            await asyncio.to_thread(self.store.add_run, run)
        except Exception as exc:
            log.warning("could not record a run of %s in the dataset store: %s", run.skill, exc)

    async def keep_review(
        self,
        skill: Skill,
        values: Mapping[str, Any],
        answer: Any,
        tools: ToolRegistry | None,
        *,
        job_id: str,
        step: str,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a reviewer's accepted answer (or approved tool calls): the best training example there is."""
        await self.keep(
            RunRecord(
                skill=skill.name,
                job_id=job_id,
                step=step,
                source="human",
                status="ok",
                input_hash=input_hash(values),
                messages=self.redacted(render_messages(skill, values, tools)),
                tools=constraint(skill, "vllm", tools).get("tools"),
                answer=self.redacted(json.loads(answer_key(answer))),
                meta=dict(meta or {}),
            )
        )

    async def compare_shadow(
        self, skill: str, current: str, candidate: str, mine: Judged, theirs: Judged, reference: Any,
        source: str | None, input_hash: str,
    ) -> None:  # fmt: skip
        """Store how the current model's first answer and the candidate's compare, and each against
        the reference answer (the LLM's or a reviewer's) when there is one."""
        ref = None if reference is None else answer_key(reference)
        mine_key, theirs_key = answer_key(mine.answer), answer_key(theirs.answer)
        await self.keep_shadow(
            ShadowCall(
                skill=skill,
                current=current,
                candidate=candidate,
                input_hash=input_hash,
                agree=mine.answer is not None and mine_key == theirs_key,
                current_ok=mine.passed,
                candidate_ok=theirs.passed,
                current_confidence=mine.confidence,
                candidate_confidence=theirs.confidence,
                final_source=source if ref is not None else None,
                current_right=None if ref is None else mine.passed and mine_key == ref,
                candidate_right=None if ref is None else theirs.passed and theirs_key == ref,
            )
        )

    async def keep_shadow(self, call: ShadowCall) -> None:
        """Store a shadow comparison; a store failure is logged, not raised."""
        try:
            await asyncio.to_thread(self.store.add_shadow_call, call)
        except Exception as exc:
            log.warning("could not record a shadow call of %s: %s", call.skill, exc)


def _floor(record: FloorRecord, version: str) -> Floor:
    return Floor(record.floor, record.target, record.signal, record.constraint_id, version)


def project_floors_file(settings: Settings) -> Path | None:
    """`floors.json` at the root of the settings' project (None when there is no project)."""
    try:
        return find_project(settings.project).root / FLOORS_FILE
    except ProjectError:
        return None


AUDIT_WINDOW = 200
"""Audits the precision alarm looks back over."""
AUDIT_MIN = 20
"""Fewer audits than this raise no alarm (the bound is too wide to mean anything)."""


def audit_alarm(recent: list[AuditRecord], target: float) -> str | None:
    """Why the alarm rings (None: it does not): the upper 95% bound on the share of audited answers
    the LLM agreed with, over these audits, is below `target`."""
    judged = [a.agree for a in recent if a.agree is not None]
    if len(judged) < AUDIT_MIN:
        return None
    agreed = sum(judged)
    upper = precision_upper_bound(agreed, len(judged))
    if upper >= target:
        return None
    return (f"the LLM agreed with {agreed} of the last {len(judged)} audited answers: precision is at most "
            f"{upper:.1%} (95% bound), below the target {target:.0%}; recalibrate or retrain")  # fmt: skip
