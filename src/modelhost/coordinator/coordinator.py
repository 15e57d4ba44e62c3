"""The coordinator: routes requests to workers, admits GPU work, and answers every failure the same way.

Routes and pipelines call ``await coordinator.infer(model, payload, files=...)`` or iterate
``coordinator.infer_stream(model, payload, files=...)``; they never see sockets or processes. Process supervision
(spawn, readiness, exit watch, stop, log) lives in ``modelhost.coordinator.supervisor``.

Files: a mapping of field name to a ``Path`` (a file the caller keeps until the call returns), a binary file object
(e.g. an upload's spooled file) or ``bytes``; the last two are written to a private temporary file for the duration
of the call.
The worker receives paths and opens them itself, so an upload is never held whole in the serve process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

from modelhost.catalog.envs import EnvManager
from modelhost.catalog.models import ModelEntry
from modelhost.catalog.registry import backend_reference
from modelhost.config import Settings
from modelhost.coordinator.admission import GpuAdmission
from modelhost.coordinator.client import WorkerClient, WorkerProtocolError, check_encodable
from modelhost.coordinator.handles import READY, WorkerHandle
from modelhost.coordinator.sources import check_source
from modelhost.coordinator.supervisor import Supervisor, describe_exit
from modelhost.errors import (
    Conflict,
    InferenceTimeout,
    ModelhostError,
    ModelUnavailable,
    QueueFull,
    WorkerCrashed,
    from_worker_error,
)
from modelhost.metrics import Metrics
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.worker.protocol import EXIT_IDLE, WorkerSpec

log = logging.getLogger(__name__)

#: What ``infer``/``infer_stream`` accept as files: a path the caller owns, or a binary file object or bytes to spool.
FileRef = Path | IO[bytes] | bytes
Files = Mapping[str, FileRef]
#: A streamed partial result: a JSON object (text generation) or bytes (an audio chunk).
Chunk = dict[str, Any] | bytes

_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, WorkerProtocolError, TimeoutError)


class _WorkerWentIdle(Exception):
    """The worker exited on its idle timer just as a request reached it: safe to retry on a fresh one."""


class Coordinator:
    def __init__(self, settings: Settings, runtime: RuntimeSettingsStore, envs: EnvManager, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.envs = envs
        self.metrics = metrics
        self.admission = GpuAdmission(metrics)
        self.supervisor = Supervisor(
            metrics,
            settings.logs_dir,
            lambda: sum(h.alive for h in self._handles.values()),
            zygote_idle_timeout=lambda: self.runtime.current.zygote_idle_timeout_seconds,
        )
        self._handles: dict[str, WorkerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_run_dir = settings.run_dir is None
        self.run_dir = Path(settings.run_dir) if settings.run_dir else Path()
        self.upload_dir = settings.data_dir / "tmp" / "uploads"

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._owns_run_dir:
            self.run_dir = Path(tempfile.mkdtemp(prefix="modelhost-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        shutil.rmtree(self.upload_dir, ignore_errors=True)  # leftovers of a server that was killed
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.upload_dir, self.upload_dir.parent):
            folder.chmod(0o700)
        log.info("coordinator started, worker sockets in %s", self.run_dir)

    async def stop(self) -> None:
        await asyncio.gather(*(self.supervisor.stop(h, "shutdown") for h in list(self._handles.values())))
        self.supervisor.cancel_tasks()
        await self.supervisor.close()
        if self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("coordinator stopped")

    # -- requests --------------------------------------------------------------------------------------------
    async def infer(self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None) -> dict[str, Any]:
        """One result. Binary values in it (an embedding matrix, a voiceprint) are ``bytes``."""
        check_encodable(payload)
        handle = self._handle(model)
        async with self._queued(handle), self._spooled(files) as paths:
            for attempt in (1, 2):
                async with self.admission.admit(model, self.runtime.current.gpu_policy):
                    client = await self._ensure_ready(handle)
                    try:
                        async with self._in_flight(handle) as timeout:
                            try:
                                async with asyncio.timeout(timeout):
                                    status, body = await client.infer(
                                        payload,
                                        request_id=uuid.uuid4().hex,
                                        idle_timeout=handle.idle_timeout,
                                        files=paths,
                                    )
                            except _TRANSPORT_ERRORS as exc:
                                raise await self._transport_failure(handle, exc, timeout) from None
                    except _WorkerWentIdle:
                        self._retry_or_raise(model, attempt)
                        continue
                    handle.requests += 1
                    if status != 200:
                        raise worker_error(status, body.get("error"))
                    result: dict[str, Any] = body["result"]
                    return result
            raise AssertionError("unreachable")

    async def warm_up(self, model: ModelEntry, wait: bool = True) -> dict[str, Any]:
        """Start the model's worker without a request (under the same admission as a load); its status after, or
        at once (``wait=False``: the load goes on in the background and a failure is logged)."""
        handle = self._handle(model)

        async def load() -> None:
            async with self.admission.admit(model, self.runtime.current.gpu_policy):
                await self._ensure_ready(handle)
            handle.last_used = time.monotonic()

        if wait:
            await load()
            return handle.status()

        async def load_logged() -> None:
            try:
                await load()
            except Exception:
                log.exception("warm-up of %s failed", model.id)

        self.supervisor.track(load_logged())
        await asyncio.sleep(0)  # let the spawn begin, so the status says so
        return handle.status()

    async def prestart_zygote(self, model: ModelEntry, keep: bool = True) -> bool:
        """Start the zygote of ``model``'s backend now instead of with its first worker, so that the first worker
        is already a fork (for pinned models, at start-up). ``keep``: the zygote stays while no worker of its backend
        runs, until ``supervisor.zygotes.release(model.id)``. False when the model cannot fork (GPU, another Python
        environment, ``zygote: false``, or its backend's zygote failed)."""
        spec = self._spec(model, self._idle_timeout(model))
        return await self.supervisor.prestart_zygote(spec, self._interpreter(model), keep=keep)

    async def infer_stream(
        self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None
    ) -> AsyncIterator[Chunk]:
        """Yield partial results: dicts, or bytes for binary chunks. Ends normally only when the worker said the
        answer is complete; any failure raises a ``ModelhostError``, before or after the first chunk. Closing the
        generator early (client gone) closes the worker connection, which stops generation. The GPU lock (if
        any) is held for the whole stream; ``worker_request_timeout_seconds`` applies to each chunk."""
        check_encodable(payload)
        handle = self._handle(model)
        async with self._queued(handle), self._spooled(files) as paths:
            for attempt in (1, 2):
                async with self.admission.admit(model, self.runtime.current.gpu_policy):
                    client = await self._ensure_ready(handle)
                    yielded = False
                    try:
                        async with self._in_flight(handle) as timeout:
                            stream = client.infer_stream(
                                payload, request_id=uuid.uuid4().hex, idle_timeout=handle.idle_timeout, files=paths
                            )
                            try:
                                while True:
                                    try:
                                        async with asyncio.timeout(timeout):  # per chunk: a stream may run long
                                            status, item = await anext(stream)
                                    except StopAsyncIteration:
                                        handle.requests += 1
                                        return
                                    except _TRANSPORT_ERRORS as exc:
                                        raise await self._transport_failure(handle, exc, timeout) from None
                                    if status != 200:
                                        handle.requests += 1
                                        error = item.get("error") if isinstance(item, dict) else None
                                        raise worker_error(status, error)
                                    yielded = True
                                    yield item
                            finally:
                                await stream.aclose()
                    except _WorkerWentIdle:
                        if yielded:  # cannot replay what the caller already has
                            raise WorkerCrashed(f"the worker for model {model.id!r} exited during the stream") from None
                        self._retry_or_raise(model, attempt)
                        continue
            raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _queued(self, handle: WorkerHandle) -> AsyncIterator[None]:
        """Queue admission and metrics, shared by both request paths."""
        model_id = handle.model.id
        limit = self.runtime.current.max_queue_per_model
        if handle.pending >= limit:
            raise QueueFull(
                f"model {model_id!r} already has {handle.pending} requests queued or running "
                f"(max_queue_per_model={limit}); retry later",
                headers={"Retry-After": "1"},
            )
        handle.pending += 1
        self.metrics.queue_depth.labels(model_id).set(handle.pending)
        started = time.monotonic()
        try:
            yield
        finally:
            handle.pending -= 1
            self.metrics.queue_depth.labels(model_id).set(handle.pending)
            self.metrics.inference_seconds.labels(model_id).observe(time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def _in_flight(self, handle: WorkerHandle) -> AsyncIterator[float]:
        """Mark a request as sent to the worker; yields the request timeout."""
        handle.idle_timeout = self._idle_timeout(handle.model)
        handle.in_flight += 1
        handle.last_used = time.monotonic()
        try:
            yield self.runtime.current.worker_request_timeout_seconds
        finally:
            handle.in_flight -= 1
            handle.last_used = time.monotonic()

    @contextlib.asynccontextmanager
    async def _spooled(self, files: Files | None) -> AsyncIterator[dict[str, Path]]:
        """Paths for ``files``: a ``Path`` as given; a file object or bytes written (in a thread) to a private
        temporary file under ``<data_dir>/tmp/uploads`` (0700), deleted when the call ends."""
        paths: dict[str, Path] = {}
        created: list[Path] = []
        try:
            for name, ref in (files or {}).items():
                if isinstance(ref, Path):
                    paths[name] = ref.resolve()
                    continue
                fd, raw = tempfile.mkstemp(prefix="upload-", dir=self.upload_dir)
                target = Path(raw)
                created.append(target)
                await asyncio.to_thread(_copy_into, ref, fd)
                paths[name] = target
            yield paths
        finally:
            for target in created:
                with contextlib.suppress(OSError):
                    target.unlink()

    async def _transport_failure(self, handle: WorkerHandle, exc: BaseException, timeout: float) -> Exception:
        """The one translation of a failed worker call (no answer in time, connection broken, answer cut off)
        into what the caller sees, for both request paths."""
        model_id = handle.model.id
        if isinstance(exc, TimeoutError):
            await self.supervisor.stop(handle, "timeout", grace=0)
            return InferenceTimeout(
                f"model {model_id!r} did not answer within {timeout:g} s (worker_request_timeout_seconds); "
                "its worker was stopped"
            )
        code = await self.supervisor.exit_code_after_failure(handle)
        if handle.stop_reason == "timeout":
            return InferenceTimeout(f"model {model_id!r}: its worker was stopped after the request timeout")
        if code == EXIT_IDLE and handle.stop_reason is None:
            return _WorkerWentIdle()
        if handle.stop_reason in ("stopped", "shutdown"):
            return ModelUnavailable(
                f"the worker for model {model_id!r} was stopped during the request "
                "(stop requested, model changed or removed, or server shutting down)",
                code="worker_stopped",
                retry_after=1,
            )
        log.warning(
            "worker for %s failed during a request (%s: %s; %s); log %s",
            model_id,
            type(exc).__name__,
            exc,
            describe_exit(code),
            handle.log_path,
        )
        return WorkerCrashed(
            f"the worker for model {model_id!r} failed during the request ({describe_exit(code)}); "
            "the next request starts a fresh worker"
        )

    @staticmethod
    def _retry_or_raise(model: ModelEntry, attempt: int) -> None:
        if attempt == 2:
            raise WorkerCrashed(f"the worker for model {model.id!r} exited twice in a row")
        log.info("worker for %s went idle under a request; retrying on a fresh worker", model.id)

    def _idle_timeout(self, model: ModelEntry) -> float:
        """The model's override, else the runtime setting: read per request so a change reaches running workers."""
        if model.idle_timeout_seconds is not None:
            return model.idle_timeout_seconds
        return self.runtime.current.worker_idle_timeout_seconds

    # -- workers ---------------------------------------------------------------------------------------------
    def _handle(self, model: ModelEntry) -> WorkerHandle:
        handle = self._handles.get(model.id)
        if handle is None:
            handle = WorkerHandle(key=worker_key(model), model=model)
            self._handles[model.id] = handle
        elif handle.model != model and not handle.alive:
            handle.model = model
            handle.key = worker_key(model)
        return handle

    async def _ensure_ready(self, handle: WorkerHandle) -> WorkerClient:
        if handle.alive and handle.state == READY and handle.client is not None:
            return handle.client
        async with handle.spawn_lock:  # concurrent first requests share one spawn
            if handle.alive and handle.state == READY and handle.client is not None:
                return handle.client
            if handle.alive:
                await self.supervisor.stop(handle, "stopped", grace=1)
            check_source(handle.model.id, handle.model.source)
            runtime = self.runtime.current
            handle.idle_timeout = self._idle_timeout(handle.model)
            spec = self._spec(handle.model, handle.idle_timeout)
            interpreter = self._interpreter(handle.model)
            await self.supervisor.spawn(handle, spec, interpreter, runtime.worker_startup_timeout_seconds)
            assert handle.client is not None
            return handle.client

    def _spec(self, model: ModelEntry, idle_timeout: float) -> WorkerSpec:
        runtime = self.runtime.current
        return WorkerSpec(
            model_id=model.id,
            task=model.task,
            backend=backend_reference(model.backend),
            source=model.source,
            socket_path=self.supervisor.socket_path(self.run_dir),
            device=model.device,
            threads=model.threads or 1,
            idle_timeout=idle_timeout,
            max_batch_size=runtime.worker_max_batch_size,
            batch_wait_ms=runtime.worker_batch_wait_ms,
            parent_pid=os.getpid(),
            log_level=self.settings.log_level,
            data_dir=str(self.settings.data_dir),
            options=model.options,
            max_audio_seconds=self.settings.max_audio_seconds,
        )

    async def stop_worker(self, model_id: str) -> bool:
        """Stop a model's worker (its memory is freed); it respawns on next use. False if none was running."""
        handle = self._handles.get(model_id)
        if handle is None or not handle.alive:
            return False
        await self.supervisor.stop(handle, "stopped")
        return True

    def model_changed(self, model_id: str) -> None:
        """Catalog callback (any thread): a changed or removed model's worker must not keep serving."""
        if self._loop is not None and model_id in self._handles:
            self._loop.call_soon_threadsafe(lambda: self.supervisor.track(self.stop_worker(model_id)))

    async def worker_info(self, model_id: str) -> dict[str, Any] | None:
        handle = self._handles.get(model_id)
        if handle is None or not handle.alive or handle.client is None or handle.state != READY:
            return None
        try:
            return await handle.client.info()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            log.warning("could not read /info of the worker for %s", model_id, exc_info=True)
            return None

    def _interpreter(self, model: ModelEntry) -> str:
        if model.python_env is None:
            return sys.executable
        if not self.envs.exists(model.python_env):
            raise Conflict(
                f"model {model.id!r} runs in python environment {model.python_env!r}, which does not exist; "
                f"create it with `modelhost envs create {model.python_env} --requirements FILE`",
                code="python_env_missing",
                param="model",
            )
        return str(self.envs.interpreter(model.python_env))

    # -- introspection ---------------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        return [h.status() for h in sorted(self._handles.values(), key=lambda h: h.model.id) if h.alive]

    def zygotes(self) -> list[dict[str, Any]]:
        return self.supervisor.zygotes.status()

    def queue_depths(self) -> dict[str, int]:
        return {h.model.id: h.pending for h in self._handles.values() if h.pending}

    def gpu_lock(self) -> dict[str, Any]:
        return {
            "held": self.admission.held,
            "holder": self.admission.holder,
            "waiters": self.admission.waiters,
        }


def worker_error(status: int, error: Any) -> ModelhostError:
    """A worker's error envelope as the typed error the API answers: a 503 stays a 503 (with Retry-After only
    when the worker was merely not ready), 4xx keep their status, anything else is a 500."""
    error = error if isinstance(error, dict) else {}
    if status == 503:
        code = error.get("code") if isinstance(error.get("code"), str) else None
        transient = code in (None, "model_unavailable")
        return ModelUnavailable(
            str(error.get("message") or "model unavailable"), code=code, retry_after=5 if transient else None
        )
    return from_worker_error(status, error)


def worker_key(model: ModelEntry) -> str:
    return f"{model.task}:{model.id}" + (f":{model.python_env}" if model.python_env else "")


def _copy_into(source: IO[bytes] | bytes, fd: int) -> None:
    with os.fdopen(fd, "wb") as target:
        if isinstance(source, bytes):
            target.write(source)
            return
        with contextlib.suppress(AttributeError, OSError, ValueError):
            source.seek(0)
        shutil.copyfileobj(source, target, 1024 * 1024)


__all__ = ["Chunk", "Coordinator", "FileRef", "Files", "ModelhostError", "worker_error", "worker_key"]
