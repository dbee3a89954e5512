"""The fleet's one invariant, kept by one mechanism.

Every `queued` or `running` job either holds a live lease or has a message on a jobs queue
(waiting in its list, or delivered and not yet acknowledged). Paused jobs (`needs_review`) and
ended ones are outside it. One reconciler at a time across the fleet (elected through Redis,
each jobs worker standing by) looks at every active job whose time has come and publishes again
the ones that break the invariant for longer than `SLMFLOW_RECONCILE_AFTER_S`: a submit or review
whose publish failed, a message kombu lost between popping and recording it, a job whose
worker died (its lease lapsed), a run given back after a store fault. A legitimate backlog is
never re-published (its messages are found), and a duplicate delivery is harmless anyway: the
lease admits one run at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from celery import Celery

from slmflow.fleet.queues import JOB_QUEUES, publish_job
from slmflow.fleet.store import JobStore

__all__ = ["Reconciler"]

log = logging.getLogger("slmflow.reconciler")
EVERY_S = 1.0


class Reconciler:
    """Stands for election every pass; while elected, republishes jobs that break the invariant."""

    def __init__(self, app: Celery, store: JobStore, every_s: float = EVERY_S) -> None:
        self.app, self.store, self.every_s = app, store, every_s
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.republished = 0

    async def run_forever(self) -> None:
        """Reconcile every `every_s` while this process lives; store errors are logged and retried."""
        while True:
            await asyncio.sleep(self.every_s)
            try:
                if await self.store.elect(self.me, max(5.0, 5 * self.every_s)):
                    await self.reconcile()
            except Exception as exc:  # keep the loop alive: the next pass tries again
                log.warning("reconcile pass failed: %s", exc)

    async def reconcile(self) -> list[str]:
        """One pass; returns the jobs published again."""
        due = await self.store.due()
        if not due:
            return []
        unleased = await self.store.unleased(due)
        if not unleased:
            return []
        waiting = await self.store.queued_messages(list(JOB_QUEUES))
        republished = []
        for job_id in unleased:
            if job_id in waiting:
                await self.store.claim_republish(job_id)  # a backlog: look again later, publish nothing
                continue
            if await self.store.claim_republish(job_id):
                log.warning("job %s: no lease and no message; publishing it again", job_id)
                publish_job(self.app, job_id, resumed=True)
                republished.append(job_id)
        self.republished += len(republished)
        return republished
