"""``JobService``: what routes use to create, read, cancel and delete jobs (the executor runs them)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from modelhost.errors import Conflict, InvalidRequest
from modelhost.jobs.executor import Executor, LocalExecutor
from modelhost.jobs.pipeline import JobDeps, PipelineRegistry
from modelhost.jobs.store import JobStore
from modelhost.schemas.jobs import TERMINAL_STATUSES, JobEvent, JobPage, JobView
from modelhost.storage.orm import ArtifactRow


@dataclass(frozen=True)
class JobInput:
    """A file handed to a job at creation: bytes, a local file, or a readable stream (an upload's spool)."""

    filename: str
    data: bytes | Path | BinaryIO
    content_type: str = "application/octet-stream"


class JobService:
    def __init__(self, store: JobStore, registry: PipelineRegistry, deps: JobDeps, executor: Executor) -> None:
        self.store = store
        self.registry = registry
        self.deps = deps
        self.executor = executor

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()

    async def create(
        self,
        kind: str,
        params: dict[str, Any],
        inputs: dict[str, JobInput] | None = None,
        job_id: str | None = None,
    ) -> JobView:
        """Store the inputs, insert the job (pending) and hand it to the executor. ``params`` must be JSON. An input
        that cannot be stored (``StorageFull`` on a full disk) leaves nothing: no job row, no input stored."""
        if self.registry.get(kind) is None:
            raise InvalidRequest(f"unknown job kind {kind!r}; kinds: {', '.join(self.registry.kinds())}")
        job_id = job_id or str(uuid.uuid4())
        described: dict[str, Any] = {}
        try:
            for name, item in (inputs or {}).items():
                info = await asyncio.to_thread(self.deps.blobs.put, f"jobs/{job_id}/inputs/{name}", item.data)
                described[name] = {"filename": item.filename, "content_type": item.content_type, "size": info.size}
            job = await asyncio.to_thread(self.store.create, kind, {**params, "inputs": described}, job_id)
        except BaseException:
            await asyncio.to_thread(self.deps.blobs.delete, f"jobs/{job_id}")
            raise
        await self.executor.submit(job.id)
        return job

    def get(self, job_id: str) -> JobView:
        return self.store.get_or_raise(job_id)

    def page(self, kind: str | None = None, status: str | None = None, limit: int = 20, offset: int = 0) -> JobPage:
        return self.store.page(kind, status, limit, offset)

    async def cancel(self, job_id: str) -> JobView:
        job = self.store.get_or_raise(job_id)
        if job.status in TERMINAL_STATUSES:
            raise Conflict(f"job {job_id!r} already ended ({job.status})", code="job_ended")
        if not await asyncio.to_thread(self.store.transition, job_id, "cancelled"):
            job = self.store.get_or_raise(job_id)
            raise Conflict(f"job {job_id!r} already ended ({job.status})", code="job_ended")
        await self.executor.cancel(job_id)
        return self.store.get_or_raise(job_id)

    async def delete(self, job_id: str) -> None:
        job = self.store.get_or_raise(job_id)
        if job.status not in TERMINAL_STATUSES:
            await asyncio.to_thread(self.store.transition, job_id, "cancelled")
            await self.executor.cancel(job_id)
        await asyncio.to_thread(self.deps.blobs.delete, f"jobs/{job_id}")
        await asyncio.to_thread(self.store.delete, job_id)

    def artifact(self, job_id: str, name: str) -> ArtifactRow:
        return self.store.artifact_or_raise(job_id, name)

    def events(self, job_id: str) -> AsyncIterator[tuple[str, JobEvent]]:
        self.store.get_or_raise(job_id)
        return self.store.watch(job_id)


def build_job_service(deps: JobDeps, registry: PipelineRegistry | None = None) -> JobService:
    from modelhost.jobs.builtin import builtin_pipelines

    store = JobStore(deps.sessions)
    registry = registry or PipelineRegistry(builtin_pipelines())
    executor: Executor
    if deps.settings.broker_url:  # steps run as Celery tasks on `modelhost node` processes
        from modelhost.cluster.executor import CeleryExecutor

        executor = CeleryExecutor(store, registry, deps)
    else:
        executor = LocalExecutor(store, registry, deps)
    return JobService(store, registry, deps, executor)
