"""``CeleryExecutor``: the jobs engine's executor when ``MODELHOST_BROKER_URL`` is set.

The front only queues: ``submit`` sends the job's next step to the ``jobs`` queue, where a node's
``steps.StepRunner`` runs it with the same pipeline code the local executor runs, records its output in the database
and queues the step after it. Job state lives only in the database (Celery keeps no results for steps). Cancelling
is a status change in the database, which the node running the step polls.

A reconciler in the front (every ``MODELHOST_BROKER_RECONCILE_SECONDS``, and at once when Redis comes back after an
outage or is found without its data) queues the next step of each running job that has neither a queued or
unacknowledged task in Redis nor a live lease (``steps.lease_key``): what a FLUSHALL or a Redis restarted without
persistence loses — queued steps, chord members, a chord's counter — comes back without restarting the front. A
duplicate it might queue is harmless: steps and chord items are recorded (a recorded one is skipped) and leased (a
copy waits while another runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from modelhost.cluster.celery import JOBS_QUEUE, STEP_TASK, build_celery, send
from modelhost.cluster.router import BrokerUnavailable
from modelhost.cluster.steps import LEASE_PREFIX, LEASE_SECONDS

if TYPE_CHECKING:
    from modelhost.jobs.pipeline import JobDeps, PipelineRegistry
    from modelhost.jobs.store import JobStore

log = logging.getLogger(__name__)

#: ``modelhost.step(job_id, NEXT_STEP)``: run whichever step of the job is next.
NEXT_STEP = -1
#: A key the front keeps in Redis: when it is gone, Redis lost its data.
MARKER_KEY = "modelhost:front-marker"
#: How often the reconciler checks that marker and the connection.
WATCH_SECONDS = 2.0
#: kombu's Redis transport: where a node's received-but-unacknowledged tasks wait (ETA retries included).
UNACKED_KEY = "unacked"


class CeleryExecutor:
    def __init__(self, store: JobStore, registry: PipelineRegistry, deps: JobDeps) -> None:
        self.store = store
        self.registry = registry
        self.deps = deps
        self.celery = build_celery(deps.settings)
        self._reconciler: asyncio.Task[None] | None = None

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
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="jobs-reconciler")

    async def _reconcile_forever(self) -> None:
        import redis
        import redis.asyncio

        assert self.deps.settings.broker_url
        client = redis.asyncio.Redis.from_url(self.deps.settings.broker_url, socket_connect_timeout=5, socket_timeout=5)
        token = uuid.uuid4().hex
        period = self.deps.settings.broker_reconcile_seconds
        last = time.monotonic()
        healthy, known = True, False
        try:
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                try:
                    lost = bool(await client.set(MARKER_KEY, token, nx=True)) and known
                    known = True
                    back, healthy = not healthy, True
                except redis.RedisError:
                    healthy = False
                    continue
                if not (lost or back or time.monotonic() - last >= period):
                    continue
                if lost or back:
                    log.warning("Redis %s: looking for lost job steps", "lost its data" if lost else "is back")
                    # Running steps and items take their leases back within a second: wait for that.
                    await asyncio.sleep(LEASE_SECONDS / 5)
                try:
                    await self.reconcile(client)
                except Exception as exc:
                    log.warning("reconciling jobs with the broker failed: %s", exc)
                last = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def reconcile(self, client: Any) -> list[str]:
        """Queue the next step of each unfinished job with no task in Redis (queued or unacknowledged) and no lease;
        returns their ids."""
        unfinished = await asyncio.to_thread(self.store.unfinished)
        if not unfinished:
            return []
        leased = {
            key.decode()[len(LEASE_PREFIX) :].split(":", 1)[0]
            async for key in client.scan_iter(match=LEASE_PREFIX + "*", count=1000)
        }
        messages = [m.decode(errors="replace") for m in await client.lrange(JOBS_QUEUE, 0, -1)]
        messages += [m.decode(errors="replace") for m in await client.hvals(UNACKED_KEY)]
        queued = "\n".join(messages)  # a step's or item's message names its job id in its headers (argsrepr)
        requeued = [job_id for job_id in unfinished if job_id not in leased and job_id not in queued]
        for job_id in requeued:
            log.warning("job %s has no task in Redis and no lease (the broker lost it): queued again", job_id)
            await self.submit(job_id)
        return requeued

    async def submit(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(send, self.celery, STEP_TASK, [job_id, NEXT_STEP], JOBS_QUEUE)
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
        """Only the reconciler runs here."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
