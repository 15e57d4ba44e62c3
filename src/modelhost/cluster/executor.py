"""``CeleryExecutor``: the jobs engine's executor when ``MODELHOST_BROKER_URL`` is set.

The front only queues: ``submit`` sends the job's next step to the ``jobs`` queue, where a node's
``steps.StepRunner`` runs it with the same pipeline code the local executor runs, records its output in the database
and queues the step after it. Job state lives only in the database (Celery keeps no results for steps). Cancelling
is a status change in the database, which the node running the step polls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from modelhost.cluster.celery import JOBS_QUEUE, STEP_TASK, build_celery
from modelhost.cluster.router import BrokerUnavailable

if TYPE_CHECKING:
    from modelhost.jobs.pipeline import JobDeps, PipelineRegistry
    from modelhost.jobs.store import JobStore

log = logging.getLogger(__name__)

#: ``modelhost.step(job_id, NEXT_STEP)``: run whichever step of the job is next.
NEXT_STEP = -1


class CeleryExecutor:
    def __init__(self, store: JobStore, registry: PipelineRegistry, deps: JobDeps) -> None:
        self.store = store
        self.registry = registry
        self.deps = deps
        self.celery = build_celery(deps.settings)

    async def start(self) -> None:
        """Queue the next step of every unfinished job: a node that already runs it makes the copy wait on its lease
        and then drop it, so this only matters when the broker lost messages (Redis restarted without its data)."""
        unfinished = await asyncio.to_thread(self.store.unfinished)
        for job_id in unfinished:
            try:
                await self.submit(job_id)
            except BrokerUnavailable as exc:
                log.warning("cannot requeue job %s: %s", job_id, exc)
        if unfinished:
            log.info("requeued %d unfinished jobs on the broker", len(unfinished))

    async def submit(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(
                self.celery.send_task, STEP_TASK, args=[job_id, NEXT_STEP], queue=JOBS_QUEUE, ignore_result=True
            )
        except Exception as exc:
            raise BrokerUnavailable(
                f"job {job_id} is saved but could not be queued (broker unreachable: {exc}); it is queued again when "
                "the server restarts"
            ) from None

    async def cancel(self, job_id: str) -> None:
        """The status is already ``cancelled`` in the database: a node running a step sees it within a second; when
        none does (pending, or between steps), the step task queued here ends the job there (clean-up, end hooks)."""
        await self.submit(job_id)

    async def stop(self) -> None:
        """Nothing runs here."""
