"""Executors run jobs. ``Executor`` is the interface; ``LocalExecutor`` runs them as asyncio tasks in the serve
process with bounded concurrency (runtime setting ``jobs_max_concurrency``). A Celery executor implements the same
interface with the same pipeline code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from modelhost.errors import ModelhostError, ModelUnavailable, QueueFull, StorageFull, WorkerCrashed, is_disk_full
from modelhost.jobs.pipeline import JobCancelled, JobDeps, Pipeline, PipelineRegistry, StepContext, TransientError
from modelhost.jobs.store import JobStore
from modelhost.storage.s3 import StorageUnavailable

log = logging.getLogger(__name__)

#: Failures a retry may cure: a crashed or not-yet-started worker, a full queue, unreachable object storage, a
#: step's own TransientError.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    WorkerCrashed,
    ModelUnavailable,
    QueueFull,
    TransientError,
    StorageUnavailable,
)


class Executor(Protocol):
    async def start(self) -> None:
        """Begin accepting jobs and restart the unfinished ones (pending or running) found in the database."""

    async def submit(self, job_id: str) -> None:
        """Run a newly created (pending) job."""

    async def cancel(self, job_id: str) -> None:
        """Stop a job whose status was already set to ``cancelled`` (its steps see it at their next check)."""

    async def stop(self) -> None:
        """Stop running jobs without changing their status: they resume at the next start."""


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The failed job's ``error``. A step's write that found the disk full (an ``OSError`` no ``storage_full_in``
    turned into ``StorageFull``) is ``storage_full`` too, naming the file or else the process's temporary folder
    (where steps write their scratch files): not retried (not transient) and not an internal error."""
    if isinstance(exc, OSError) and is_disk_full(exc):
        exc = StorageFull.from_os_error(exc, "a file of the job's step")
    if isinstance(exc, ModelhostError):
        return dict(exc.envelope()["error"])
    return {
        "message": f"internal error: {type(exc).__name__}: {exc}",
        "type": "server_error",
        "param": None,
        "code": "job_failed",
    }


class _Limiter:
    """A semaphore whose size is read at every acquisition (a runtime setting changes it live)."""

    def __init__(self, size: Any) -> None:
        self._size = size
        self._running = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._running < max(1, int(self._size())))
            self._running += 1

    async def __aexit__(self, *_exc: object) -> None:
        async with self._changed:
            self._running -= 1
            self._changed.notify_all()


class LocalExecutor:
    def __init__(self, store: JobStore, registry: PipelineRegistry, deps: JobDeps) -> None:
        self.store = store
        self.registry = registry
        self.deps = deps
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_flags: dict[str, asyncio.Event] = {}
        self._started: set[str] = set()  # jobs whose steps began in this process
        self._limiter = _Limiter(lambda: deps.runtime.current.jobs_max_concurrency)
        self._stopping = False

    async def start(self) -> None:
        unfinished = await asyncio.to_thread(self.store.unfinished)
        if unfinished:
            log.info("resuming %d unfinished jobs", len(unfinished))
        for job_id in unfinished:
            await self.submit(job_id)

    async def submit(self, job_id: str) -> None:
        if job_id in self._tasks or self._stopping:
            return
        self._cancel_flags[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._forget(job_id))

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._cancel_flags.pop(job_id, None)
        self._started.discard(job_id)

    async def cancel(self, job_id: str) -> None:
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
        started = job_id in self._started
        task = self._tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not started:  # cancelled while pending: its steps never ran, its end hooks run now
            row = await asyncio.to_thread(self.store.row, job_id)
            pipeline = self.registry.get(row.kind) if row is not None else None
            if row is not None and pipeline is not None:
                ctx = await self._context(job_id, row.kind, dict(row.params or {}), pipeline)
                await self._ended(ctx, pipeline, "cancelled", None)

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, job_id: str) -> None:
        """Wait until the job's task (if any runs here) is done. For tests and shutdown."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    # -- running one job -------------------------------------------------------------------------------------
    async def _run(self, job_id: str) -> None:
        async with self._limiter:
            row = await asyncio.to_thread(self.store.row, job_id)
            if row is None or row.status not in ("pending", "running"):
                return
            pipeline = self.registry.get(row.kind)
            if pipeline is None:
                error = {
                    "message": f"no pipeline for job kind {row.kind!r}",
                    "type": "server_error",
                    "param": None,
                    "code": "unknown_job_kind",
                }
                await asyncio.to_thread(self.store.transition, job_id, "failed", error=error)
                return
            if row.status == "pending":
                if not await asyncio.to_thread(self.store.transition, job_id, "running"):
                    return  # cancelled meanwhile
            else:
                await asyncio.to_thread(self.store.resume, job_id)
            self._started.add(job_id)
            ctx = await self._context(job_id, row.kind, dict(row.params or {}), pipeline)
            await self._run_steps(ctx, pipeline)

    async def _context(self, job_id: str, kind: str, params: dict[str, Any], pipeline: Pipeline) -> StepContext:
        return StepContext(
            job_id=job_id,
            kind=kind,
            params=params,
            deps=self.deps,
            store=self.store,
            pipeline=pipeline,
            outputs=await asyncio.to_thread(self.store.step_outputs, job_id),
            cancelled=self._cancel_flags.get(job_id) or asyncio.Event(),
        )

    async def _run_steps(self, ctx: StepContext, pipeline: Pipeline) -> None:
        job_id = ctx.job_id
        started = time.monotonic()
        try:
            result: Any = None
            for index, step in enumerate(pipeline.steps):
                ctx._enter(index)
                if step.name in ctx.outputs:
                    result = ctx.outputs[step.name]
                    continue
                log.info("job %s (%s) step %s starting", job_id, ctx.kind, step.name)  # as a node logs it
                await asyncio.to_thread(self.store.set_stage, job_id, step.name, pipeline.progress_at(index, 0.0))
                result = await self._run_step(ctx, step.name, step.fn)
                await asyncio.to_thread(self.store.record_step, job_id, step.name, result)
                ctx.outputs[step.name] = result
                log.info("job %s (%s) step %s done", job_id, ctx.kind, step.name)
            await self._ended(ctx, pipeline, "completed", None)
            if await asyncio.to_thread(self.store.transition, job_id, "completed", result=result):
                log.info("job %s (%s) completed in %.1f s", job_id, ctx.kind, time.monotonic() - started)
        except (JobCancelled, asyncio.CancelledError):
            if ctx.cancelled:
                log.info("job %s (%s) cancelled at %s", job_id, ctx.kind, ctx.step)
                await self._ended(ctx, pipeline, "cancelled", None)
                await asyncio.to_thread(self.store.transition, job_id, "cancelled")
                return
            raise  # server shutdown: the job stays running and resumes at the next start
        except Exception as exc:
            error = error_fields(exc)
            if not isinstance(exc, ModelhostError):
                log.exception("job %s (%s) failed at %s", job_id, ctx.kind, ctx.step)
            else:
                log.info("job %s (%s) failed at %s: %s", job_id, ctx.kind, ctx.step, error["message"])
            await self._ended(ctx, pipeline, "failed", error)
            await asyncio.to_thread(self.store.transition, job_id, "failed", error=error)

    async def _run_step(self, ctx: StepContext, name: str, fn: Any) -> Any:
        attempt = 1
        while True:
            ctx.check_cancelled()
            try:
                return await fn(ctx)
            except TRANSIENT_ERRORS as exc:
                runtime = self.deps.runtime.current
                if attempt >= runtime.jobs_max_attempts:
                    raise
                delay = runtime.jobs_retry_backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "job %s step %s failed (%s: %s); retry %d/%d in %.1f s",
                    ctx.job_id,
                    name,
                    type(exc).__name__,
                    exc,
                    attempt,
                    runtime.jobs_max_attempts - 1,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def _ended(self, ctx: StepContext, pipeline: Pipeline, status: str, error: dict[str, Any] | None) -> None:
        """Before the final status is written: drop intermediate files (and, unless completed, any artifact), then
        run the pipeline's end hooks."""
        try:
            await asyncio.to_thread(self.deps.blobs.delete, f"jobs/{ctx.job_id}/work")
            if status != "completed":
                await asyncio.to_thread(self.deps.blobs.delete, f"jobs/{ctx.job_id}/artifacts")
                await asyncio.to_thread(self.store.delete_artifacts, ctx.job_id)
            for hook in pipeline.end_hooks:
                await hook(ctx, status, error)
        except Exception:
            log.exception("job %s: clean-up after %s failed", ctx.job_id, status)
