"""``StepRunner``: runs one step of a job on a node (the ``modelhost.step`` task), with the local executor's
retry/backoff and end-of-job logic, so the pipelines' code is the same on one machine and on a cluster.

Exactly-once in effect, with at-least-once delivery: a step message carries the index of the step it starts with
(a task may go on to the job's later steps itself: ``node.CHAIN_SECONDS``); a copy for a step already recorded waits
while somebody holds the job's lease and is then dropped after making sure the first unrecorded step is queued, and
a running step holds that lease in Redis (renewed while it runs, gone a few seconds after its node dies), so a copy
redelivered while the step still runs elsewhere waits for the lease instead of running beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelhost.cluster.fanout import ChordFanOut, FanOutRequested, ItemFinished, item_key
from modelhost.errors import ModelhostError
from modelhost.jobs.executor import LocalExecutor, error_fields
from modelhost.jobs.pipeline import JobCancelled, StepContext

if TYPE_CHECKING:
    from modelhost.jobs.pipeline import JobDeps, Pipeline, PipelineRegistry
    from modelhost.jobs.store import JobStore

log = logging.getLogger(__name__)

LEASE_PREFIX = "modelhost:lease:"
LEASE_SECONDS = 15
CANCEL_POLL_SECONDS = 1.0
ENDED_PREFIX = "modelhost:ended:"
ENDED_TTL_SECONDS = 7 * 24 * 3600

#: Renew a lease we hold, or take it again when Redis lost it (FLUSHALL, a restart without persistence) — but never
#: take over one that another runner holds.
_RENEW = """
local held = redis.call('get', KEYS[1])
if held == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
if not held then return redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) and 1 or 0 end
return 0
"""
#: Delete the lease only while we hold it: one round trip.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_key(job_id: str, item: str | None = None) -> str:
    """``modelhost:lease:<job>`` for a step, ``modelhost:lease:<job>:<step>/~fan-<n>/<i>`` for an item of a chord:
    every lease of a job starts with ``modelhost:lease:<job>``."""
    return LEASE_PREFIX + job_id + (f":{item}" if item else "")


@dataclass(frozen=True)
class Outcome:
    """What the task does next: nothing (``done``), queue step ``next_index``, or retry ``retry_index`` later."""

    done: bool = False
    next_index: int | None = None
    retry_index: int | None = None
    #: ``(step index, gather ordinal, missing items)``: send the items as a chord whose callback replays the step.
    fan_out: tuple[int, int, list[int]] | None = None


class StepRunner:
    def __init__(self, store: JobStore, registry: PipelineRegistry, deps: JobDeps, redis_url: str) -> None:
        import redis.asyncio

        self.store = store
        self.registry = registry
        self.deps = deps
        self.redis = redis.asyncio.Redis.from_url(redis_url, socket_connect_timeout=5)
        # The local executor's step retry (backoff) and end-of-job clean-up, reused as they are.
        self._local = LocalExecutor(store, registry, deps)
        #: Lease keepers told to stop (seen in a session where one outlived its cancellation, renewing a finished
        #: item's lease forever, so the front's reconciler never requeued the job: an e2e Redis-wipe test hung).
        self._stopping: set[asyncio.Task[Any]] = set()

    async def run(self, job_id: str, index: int) -> Outcome:
        row, outputs = await asyncio.to_thread(self.store.row_and_outputs, job_id)
        if row is None:
            return Outcome(done=True)
        pipeline = self.registry.get(row.kind)
        if row.status == "cancelled" and pipeline is not None:
            # Cancelled between steps or before its first one: nobody else ends it (the executor queues this).
            ctx = await self._context(job_id, row.kind, dict(row.params or {}), pipeline, asyncio.Event(), outputs)
            await self._end_once(ctx, pipeline, "cancelled", None)
            return Outcome(done=True)
        if row.status not in ("pending", "running"):
            return Outcome(done=True)
        if pipeline is None:
            error = {
                "message": f"no pipeline for job kind {row.kind!r}",
                "type": "server_error",
                "param": None,
                "code": "unknown_job_kind",
            }
            await asyncio.to_thread(self.store.transition, job_id, "failed", error=error)
            return Outcome(done=True)
        first = next((i for i, s in enumerate(pipeline.steps) if s.name not in outputs), len(pipeline.steps))
        if index < 0:
            index = first
        if index != first:
            if index > first:
                return Outcome(done=True)
            # A copy of a step that is recorded: its runner went on to the next step (in the same task or through
            # the queue), unless it died right after recording. Somebody holds the job's lease: wait for it (a node
            # that died mid-step holds it for up to LEASE_SECONDS, and the copy is then the job's only task);
            # nobody: queue the first step not recorded.
            if await self.redis.exists(LEASE_PREFIX + job_id):
                return Outcome(retry_index=index)
            return Outcome(next_index=first)
        key = lease_key(job_id)
        token = uuid.uuid4().hex
        if not await self.redis.set(key, token, nx=True, ex=LEASE_SECONDS):
            return Outcome(retry_index=index)
        cancelled = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(job_id, key, token, cancelled, ("cancelled",)))
        try:
            return await self._run_step(job_id, row.kind, row.status, dict(row.params or {}), index, outputs, cancelled)
        finally:
            await self._release(keeper, key, token)

    async def _release(self, keeper: asyncio.Task[None], key: str, token: str) -> None:
        self._stopping.add(keeper)  # the keeper also stops by itself, should a Redis call swallow the cancellation
        keeper.add_done_callback(self._stopping.discard)
        keeper.cancel()
        await asyncio.wait([keeper], timeout=LEASE_SECONDS)
        with contextlib.suppress(Exception):
            await self.redis.eval(_RELEASE, 1, key, token)

    async def _keep_lease(
        self, job_id: str, key: str, token: str, cancelled: asyncio.Event, stop_on: tuple[str, ...]
    ) -> None:
        """Renew the lease (every second: one lost with Redis's data is back within a second) and watch for
        cancellation (a status in ``stop_on``) while the step or item runs."""
        me = asyncio.current_task()
        while me not in self._stopping:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if me in self._stopping:
                return
            with contextlib.suppress(Exception):
                row = await asyncio.to_thread(self.store.row, job_id)
                if row is not None and row.status in stop_on:
                    cancelled.set()
                await self.redis.eval(_RENEW, 1, key, token, LEASE_SECONDS)

    async def run_item(self, job_id: str, index: int, ordinal: int, item: int) -> Outcome:
        """Item ``item`` of gather ``ordinal`` of step ``index`` (a chord member): run and record it unless it is
        recorded; a transient failure retries with the local executor's backoff, a permanent one fails the job (the
        chord's callback then finds the job failed). ``retry_index`` set: another runner holds the item's lease."""
        row, outputs = await asyncio.to_thread(self.store.row_and_outputs, job_id)
        pipeline = self.registry.get(row.kind) if row is not None else None
        if row is None or pipeline is None or row.status != "running" or index >= len(pipeline.steps):
            return Outcome(done=True)
        step = pipeline.steps[index]
        name = item_key(step.name, ordinal, item)
        if name in outputs or step.name in outputs:
            return Outcome(done=True)  # a redelivered copy
        key = lease_key(job_id, name)
        token = uuid.uuid4().hex
        if not await self.redis.set(key, token, nx=True, ex=LEASE_SECONDS):
            return Outcome(retry_index=index)
        cancelled = asyncio.Event()
        # A job failed by another item (or cancelled) stops this one at its next check.
        keeper = asyncio.create_task(self._keep_lease(job_id, key, token, cancelled, ("cancelled", "failed")))
        ctx = await self._context(job_id, row.kind, dict(row.params or {}), pipeline, cancelled, outputs)
        ctx._enter(index)
        fan_out = ChordFanOut((ordinal, item))
        ctx.fan_out = fan_out

        async def attempt(ctx: StepContext) -> Any:
            fan_out.reset()
            return await step.fn(ctx)

        log.info("job %s (%s) step %s item %d starting", job_id, row.kind, name, item)
        try:
            await self._local._run_step(ctx, name, attempt)
        except ItemFinished:
            log.info("job %s (%s) step %s item %d done", job_id, row.kind, name, item)
        except (JobCancelled, FanOutRequested):
            pass  # the job ended meanwhile / an earlier gather is incomplete: the chord's callback sorts it out
        except Exception as exc:
            error = error_fields(exc)
            if isinstance(exc, ModelhostError):
                log.info("job %s (%s) failed at %s: %s", job_id, row.kind, name, error["message"])
            else:
                log.exception("job %s (%s) failed at %s", job_id, row.kind, name)
            await self._end_once(ctx, pipeline, "failed", error)
            await asyncio.to_thread(self.store.transition, job_id, "failed", error=error)
        finally:
            await self._release(keeper, key, token)
        return Outcome(done=True)

    async def _run_step(
        self,
        job_id: str,
        kind: str,
        status: str,
        params: dict[str, Any],
        index: int,
        outputs: dict[str, Any],
        cancelled: asyncio.Event,
    ) -> Outcome:
        pipeline = self.registry.get(kind)
        assert pipeline is not None
        if status == "pending":
            if not await asyncio.to_thread(self.store.transition, job_id, "running"):
                return Outcome(done=True)
        elif index == 0 or not outputs:
            await asyncio.to_thread(self.store.resume, job_id)
        ctx = await self._context(job_id, kind, params, pipeline, cancelled, outputs)
        ctx._enter(index)
        step = pipeline.steps[index]
        fan_out = ChordFanOut()
        ctx.fan_out = fan_out

        async def attempt(ctx: StepContext) -> Any:
            fan_out.reset()
            return await step.fn(ctx)

        log.info("job %s (%s) step %s starting", job_id, kind, step.name)
        try:
            if not any(name.startswith(step.name + "/") for name in outputs):  # not a replay after a chord
                await asyncio.to_thread(self.store.set_stage, job_id, step.name, pipeline.progress_at(index, 0.0))
            result = await self._local._run_step(ctx, step.name, attempt)
            await asyncio.to_thread(self.store.record_step, job_id, step.name, result)
        except FanOutRequested as fan:
            log.info("job %s (%s) step %s fans out %d of %d items as a chord", job_id, kind, step.name,
                     len(fan.missing), fan.size)  # fmt: skip
            return Outcome(fan_out=(index, fan.ordinal, fan.missing))
        except JobCancelled:
            log.info("job %s (%s) cancelled at %s", job_id, kind, step.name)
            await self._end_once(ctx, pipeline, "cancelled", None)
            await asyncio.to_thread(self.store.transition, job_id, "cancelled")
            return Outcome(done=True)
        except Exception as exc:
            error = error_fields(exc)
            if isinstance(exc, ModelhostError):
                log.info("job %s (%s) failed at %s: %s", job_id, kind, step.name, error["message"])
            else:
                log.exception("job %s (%s) failed at %s", job_id, kind, step.name)
            await self._end_once(ctx, pipeline, "failed", error)
            await asyncio.to_thread(self.store.transition, job_id, "failed", error=error)
            return Outcome(done=True)
        log.info("job %s (%s) step %s done", job_id, kind, step.name)
        if index + 1 < len(pipeline.steps):
            return Outcome(next_index=index + 1)
        await self._end_once(ctx, pipeline, "completed", None)
        if await asyncio.to_thread(self.store.transition, job_id, "completed", result=result):
            log.info("job %s (%s) completed", job_id, kind)
        return Outcome(done=True)

    async def _context(
        self,
        job_id: str,
        kind: str,
        params: dict[str, Any],
        pipeline: Pipeline,
        cancelled: asyncio.Event,
        outputs: dict[str, Any] | None = None,
    ) -> StepContext:
        if outputs is None:
            outputs = await asyncio.to_thread(self.store.step_outputs, job_id)
        return StepContext(
            job_id=job_id,
            kind=kind,
            params=params,
            deps=self.deps,
            store=self.store,
            pipeline=pipeline,
            outputs=outputs,
            cancelled=cancelled,
        )

    async def _end_once(self, ctx: StepContext, pipeline: Pipeline, status: str, error: dict[str, Any] | None) -> None:
        """The local executor's end of a job (clean-up, end hooks), once per job across nodes; a job cancelled
        meanwhile ends as cancelled."""
        if not await self.redis.set(ENDED_PREFIX + ctx.job_id, status, nx=True, ex=ENDED_TTL_SECONDS):
            return
        row = await asyncio.to_thread(self.store.row, ctx.job_id)
        if row is not None and row.status == "cancelled":
            status, error = "cancelled", None
        await self._local._ended(ctx, pipeline, status, error)

    async def close(self) -> None:
        await self.redis.aclose()
