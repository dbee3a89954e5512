"""What the cascade asks of the learning loop: which adapter serves a skill, shadow, recording.

`Learning` is built from settings with the endpoints (`Endpoints.learning`). It reads a skill's
route (current adapter, candidate in shadow) from the dataset store, cached for
`SLMFLOW_ROUTE_TTL_S`; with `SLMFLOW_RECORD=true` it keeps every skill run, redacted. The store
failing never fails a job: the run goes on with the base model and the failure is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from slmflow.learning.store import DatasetStore, Route, RunRecord, ShadowCall
from slmflow.prompts import render_messages
from slmflow.redaction import Redactor, redact, redact_value
from slmflow.settings import Settings
from slmflow.skills import Skill
from slmflow.tools import ToolRegistry
from slmflow.verdicts import constraint

__all__ = ["Learning", "answer_key", "input_hash"]

log = logging.getLogger("slmflow.learning")


def input_hash(values: Mapping[str, Any]) -> str:
    """Hash of a skill's input (before redaction): the identity of a training example."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def answer_key(answer: Any) -> str:
    """A comparable form of an answer: tool calls by name and arguments only, never their results."""
    if isinstance(answer, list):
        answer = [
            {"name": c.get("name"), "arguments": c.get("arguments")} if isinstance(c, dict) else c for c in answer
        ]
    return json.dumps(answer, sort_keys=True, default=str)


class Learning:
    """Routes, shadow sampling and run recording over one dataset store."""

    def __init__(
        self,
        store: DatasetStore,
        *,
        record: bool = False,
        rationale: bool = False,
        route_ttl_s: float = 5.0,
        redactor: Redactor = redact,
        follow_routes: bool = True,
    ) -> None:
        self.store = store
        self.record = record
        self.follow_routes = follow_routes
        self.rationale = rationale and record
        self.route_ttl_s = route_ttl_s
        self.redactor = redactor
        self._routes: dict[str, tuple[float, Route]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Learning:
        """The learning hooks the settings describe (routes are read even when not recording)."""
        return cls(
            DatasetStore(settings.dataset_store_url),
            record=settings.record,
            rationale=settings.record_rationale,
            route_ttl_s=settings.route_ttl_s,
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
                route = await asyncio.to_thread(self.store.route, skill)
            except Exception as exc:  # the store is an optimisation here, never a reason to fail a job
                log.warning("cannot read the route of %s from the dataset store (%s): using the base model", skill, exc)
        self._routes[skill] = (now, route)
        return route

    def forget_routes(self) -> None:
        """Read routes from the store again on next use."""
        self._routes.clear()

    def redacted(self, value: Any) -> Any:
        """`value` with every string redacted."""
        return redact_value(value, self.redactor)

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
    ) -> None:
        """Store a reviewer's accepted answer: the best training example there is."""
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
            )
        )

    async def keep_shadow(self, call: ShadowCall) -> None:
        """Store a shadow comparison; a store failure is logged, not raised."""
        try:
            await asyncio.to_thread(self.store.add_shadow_call, call)
        except Exception as exc:
            log.warning("could not record a shadow call of %s: %s", call.skill, exc)
