"""Pipelines: named, idempotent steps over a step context. See ``modelhost.jobs`` for the whole contract."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from modelhost.errors import ModelhostError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from modelhost.catalog.store import Catalog
    from modelhost.config import Settings
    from modelhost.coordinator.coordinator import Coordinator
    from modelhost.jobs.store import JobStore
    from modelhost.runtime_settings import RuntimeSettingsStore
    from modelhost.speakers.directory import SpeakerDirectory
    from modelhost.storage.blobs import BlobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Blob transfers a step runs at once (``put_artifacts``, ``bounded_gather``).
TRANSFERS_AT_ONCE = 8


async def bounded_gather(
    calls: list[Coroutine[Any, Any, T]] | tuple[Coroutine[Any, Any, T], ...],
    limit: int | None,
    before: Callable[[], None] | None = None,
) -> list[T]:
    """Run ``calls`` in this process, at most ``limit`` at once (None: all), results in order; the first failure
    cancels the rest and is raised. ``before`` runs as each call starts (a cancellation check). Unlike
    ``StepContext.gather`` it never becomes a chord on a cluster: for a step's own I/O, not its fan-out."""
    semaphore = asyncio.Semaphore(limit or len(calls) or 1)

    async def bounded(call: Coroutine[Any, Any, T]) -> T:
        async with semaphore:
            if before is not None:
                before()
            return await call

    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(bounded(c)) for c in calls]
    except* Exception as failures:
        raise failures.exceptions[0] from None
    return [t.result() for t in tasks]


StepFn = Callable[["StepContext"], Awaitable[Any]]
EndHook = Callable[["StepContext", str, dict[str, Any] | None], Awaitable[None]]


class JobCancelled(Exception):
    """Raised by ``StepContext.check_cancelled()`` once the job was cancelled."""


class TransientError(ModelhostError):
    """A step failed for a reason that may pass (the executor retries the step with backoff)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "transient_failure"


@dataclass
class JobDeps:
    """What steps may use; built once by the app (``modelhost.jobs.service.build_job_service``)."""

    settings: Settings
    runtime: RuntimeSettingsStore
    catalog: Catalog
    coordinator: Coordinator
    blobs: BlobStore
    sessions: sessionmaker[Session]
    speakers: SpeakerDirectory
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn
    weight: float


class Pipeline:
    """A job kind: steps run in declaration order; the last step's return value is the job's ``result``."""

    def __init__(self, kind: str, *, description: str = "") -> None:
        self.kind = kind
        self.description = description
        self.steps: list[Step] = []
        self.end_hooks: list[EndHook] = []

    def step(self, name: str, *, weight: float = 1.0) -> Callable[[StepFn], StepFn]:
        """Declare the next step. ``weight`` is its share of the job's progress (relative to the other steps)."""
        if "/" in name or any(s.name == name for s in self.steps):
            raise ValueError(f"step name {name!r} is taken or contains '/'")

        def register(fn: StepFn) -> StepFn:
            self.steps.append(Step(name, fn, weight))
            return fn

        return register

    def on_end(self, hook: EndHook) -> EndHook:
        """``hook(ctx, status, error)`` runs once when the job ends (completed, failed or cancelled)."""
        self.end_hooks.append(hook)
        return hook

    def progress_at(self, step_index: int, fraction: float) -> float:
        total = sum(s.weight for s in self.steps) or 1.0
        done = sum(s.weight for s in self.steps[:step_index])
        current = self.steps[step_index].weight if step_index < len(self.steps) else 0.0
        return min(1.0, (done + current * max(0.0, min(1.0, fraction))) / total)


class PipelineRegistry:
    def __init__(self, pipelines: list[Pipeline] | None = None) -> None:
        self._pipelines: dict[str, Pipeline] = {}
        for pipeline in pipelines or ():
            self.add(pipeline)

    def add(self, pipeline: Pipeline) -> None:
        if pipeline.kind in self._pipelines:
            raise ValueError(f"pipeline kind {pipeline.kind!r} is registered twice")
        self._pipelines[pipeline.kind] = pipeline

    def get(self, kind: str) -> Pipeline | None:
        return self._pipelines.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._pipelines)


class StepContext:
    """What a step sees. One context per job run; ``step`` names the step running now."""

    def __init__(
        self,
        *,
        job_id: str,
        kind: str,
        params: dict[str, Any],
        deps: JobDeps,
        store: JobStore,
        pipeline: Pipeline,
        outputs: dict[str, Any],
        cancelled: asyncio.Event,
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.params = params
        self.deps = deps
        self.outputs = outputs
        self.step = ""
        self._store = store
        self._pipeline = pipeline
        self._step_index = 0
        self._cancelled = cancelled
        self._last_progress = -1.0
        #: Set by a distributed executor: ``fan_out.gather(ctx, calls, limit)`` replaces the in-process gather
        #: (``modelhost.cluster.fanout``: the items run as a Celery chord). None: the calls run here.
        self.fan_out: Any = None

    # -- shortcuts -------------------------------------------------------------------------------------------
    @property
    def blobs(self) -> BlobStore:
        return self.deps.blobs

    @property
    def coordinator(self) -> Coordinator:
        return self.deps.coordinator

    @property
    def catalog(self) -> Catalog:
        return self.deps.catalog

    # -- progress and cancellation ---------------------------------------------------------------------------
    def _enter(self, index: int) -> None:
        self._step_index = index
        self.step = self._pipeline.steps[index].name

    async def progress(self, fraction: float) -> None:
        """Report how far the current step is (0..1); the job's progress follows the step weights."""
        self.check_cancelled()
        overall = self._pipeline.progress_at(self._step_index, fraction)
        if overall - self._last_progress >= 0.005 or fraction >= 1.0:
            self._last_progress = overall
            await asyncio.to_thread(self._store.set_progress, self.job_id, overall)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled(self.job_id)

    # -- recorded sub-steps and fan-out ----------------------------------------------------------------------
    async def once(self, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` unless ``<step>/<name>`` was recorded by an earlier run of this job; record its (JSON)
        result. Use it for the parts of a long step (one chunk, one slide) so a resumed job skips them."""
        key = f"{self.step}/{name}"
        if key in self.outputs:
            return self.outputs[key]  # type: ignore[no-any-return]  # recorded by this same call before
        self.check_cancelled()
        value = await fn()
        await asyncio.to_thread(self._store.record_step, self.job_id, key, value)
        self.outputs[key] = value
        return value

    async def gather(self, *calls: Coroutine[Any, Any, T], limit: int | None = None) -> list[T]:
        """Run coroutines concurrently (at most ``limit`` at a time), results in order; the first failure
        cancels the rest and is raised.

        Under the Celery executor each call is one task of a chord (``modelhost.cluster.fanout``): the step is
        replayed up to this call on the node that runs an item, so the code before it must be deterministic and
        the results JSON."""
        if self.fan_out is not None:
            return await self.fan_out.gather(self, calls, limit)  # type: ignore[no-any-return]
        return await bounded_gather(calls, limit, self.check_cancelled)

    # -- files -----------------------------------------------------------------------------------------------
    def input_key(self, name: str) -> str:
        return f"jobs/{self.job_id}/inputs/{name}"

    def input_info(self, name: str) -> dict[str, Any]:
        """``{"filename", "content_type", "size"}`` of an input given at creation."""
        info: dict[str, Any] = self.params["inputs"][name]
        return info

    async def read_input(self, name: str) -> bytes:
        return await asyncio.to_thread(self.blobs.get, self.input_key(name))

    def input_path(self, name: str) -> contextlib.AbstractAsyncContextManager[Path]:
        return self.blobs.local_path(self.input_key(name))

    def work_key(self, name: str) -> str:
        """Blob key for an intermediate file of this job (deleted when the job ends)."""
        return f"jobs/{self.job_id}/work/{name}"

    async def put_work(self, name: str, data: bytes | Path | BinaryIO) -> str:
        info = await asyncio.to_thread(self.blobs.put, self.work_key(name), data)
        return info.key

    async def read_work(self, name: str) -> bytes:
        return await asyncio.to_thread(self.blobs.get, self.work_key(name))

    def work_path(self, name: str) -> contextlib.AbstractAsyncContextManager[Path]:
        return self.blobs.local_path(self.work_key(name))

    async def put_artifact(self, name: str, data: bytes | Path | BinaryIO, media_type: str) -> None:
        """Store a result file clients download at ``/v1/jobs/{id}/artifacts/{name}`` (replaces one of that name).

        Each version gets a blob key of its own (``jobs/<id>/artifacts/<version>/<name>``), never written again: a
        download serves the bytes of the version whose ETag and size it sent, even while a step rewrites the
        artifact (``notes.json``). The version it replaces is deleted once the row names the new one."""
        if "/" in name or not name:
            raise ValueError(f"invalid artifact name {name!r}")
        key = f"jobs/{self.job_id}/artifacts/{uuid.uuid4().hex[:16]}/{name}"
        info = await asyncio.to_thread(self.blobs.put, key, data)
        replaced = await asyncio.to_thread(
            self._store.add_artifact, self.job_id, name, media_type, info.size, info.sha256, info.key
        )
        if replaced is not None:
            try:
                await asyncio.to_thread(self.blobs.delete, replaced)
            except Exception as exc:  # it goes with the job's folder at the latest: not worth failing the step
                log.warning("job %s: could not delete %s, replaced by %s (%s)", self.job_id, replaced, key, exc)

    async def artifact_keys(self) -> dict[str, str]:
        """Name → blob key of each artifact stored so far (a later step reading what an earlier one stored)."""
        return await asyncio.to_thread(self._store.artifact_keys, self.job_id)

    async def put_artifacts(self, *artifacts: tuple[str, bytes | Path | BinaryIO, str]) -> None:
        """``put_artifact(name, data, media_type)`` for each, several at once (at most ``TRANSFERS_AT_ONCE``): each
        is a blob write and a database row, round trips to S3 and PostgreSQL on a cluster."""
        await bounded_gather([self.put_artifact(*artifact) for artifact in artifacts], TRANSFERS_AT_ONCE)
