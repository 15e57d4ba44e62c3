"""The coordinator: spawns workers on first use, admits GPU work, routes requests, reaps exits.

Routes and pipelines call ``await coordinator.infer(model, payload)``; they never see sockets or processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from modelhost.catalog.envs import EnvManager
from modelhost.catalog.models import ModelEntry
from modelhost.catalog.registry import backend_reference
from modelhost.config import Settings
from modelhost.coordinator.admission import GpuAdmission
from modelhost.coordinator.client import WorkerClient
from modelhost.coordinator.handles import READY, STARTING, TERMINATED, WorkerHandle
from modelhost.coordinator.spawn import describe_exit, spawn_worker, stop_process
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
from modelhost.worker.protocol import ERROR, EXIT_IDLE, WorkerSpec
from modelhost.worker.protocol import READY as WORKER_READY

log = logging.getLogger(__name__)

Files = dict[str, tuple[str, bytes, str]]


class _WorkerWentIdle(Exception):
    """The worker exited on its idle timer just as a request reached it: safe to retry on a fresh one."""


class Coordinator:
    def __init__(self, settings: Settings, runtime: RuntimeSettingsStore, envs: EnvManager, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.envs = envs
        self.metrics = metrics
        self.admission = GpuAdmission(metrics)
        self._handles: dict[str, WorkerHandle] = {}
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owns_run_dir = settings.run_dir is None
        self.run_dir = Path(settings.run_dir) if settings.run_dir else Path()

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._owns_run_dir:
            self.run_dir = Path(tempfile.mkdtemp(prefix="modelhost-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        log.info("coordinator started, worker sockets in %s", self.run_dir)

    async def stop(self) -> None:
        await asyncio.gather(*(self._stop_handle(h, "shutdown") for h in list(self._handles.values())))
        for task in list(self._tasks):
            task.cancel()
        if self._owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("coordinator stopped")

    # -- requests --------------------------------------------------------------------------------------------
    async def infer(self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None) -> dict[str, Any]:
        handle = self._handle(model)
        runtime = self.runtime.current
        if handle.pending >= runtime.max_queue_per_model:
            raise QueueFull(
                f"model {model.id!r} already has {handle.pending} requests queued or running "
                f"(max_queue_per_model={runtime.max_queue_per_model}); retry later",
                headers={"Retry-After": "1"},
            )
        handle.pending += 1
        self.metrics.queue_depth.labels(model.id).set(handle.pending)
        started = time.monotonic()
        try:
            for attempt in (1, 2):
                async with self.admission.admit(model, runtime.gpu_policy):
                    client = await self._ensure_ready(handle)
                    try:
                        return await self._call(handle, client, payload, files)
                    except _WorkerWentIdle:
                        if attempt == 2:
                            raise WorkerCrashed(f"worker for model {model.id!r} exited twice in a row") from None
                        log.info("worker for %s went idle under a request; retrying on a fresh worker", model.id)
            raise AssertionError("unreachable")
        finally:
            handle.pending -= 1
            self.metrics.queue_depth.labels(model.id).set(handle.pending)
            self.metrics.inference_seconds.labels(model.id).observe(time.monotonic() - started)

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

        self._track(load_logged())
        await asyncio.sleep(0)  # let the spawn begin, so the status says so
        return handle.status()

    async def infer_stream(
        self, model: ModelEntry, payload: dict[str, Any], files: Files | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield partial results. Closing the generator early (client gone) closes the worker connection,
        which makes the worker stop generating. The GPU lock (if any) is held for the whole stream."""
        handle = self._handle(model)
        runtime = self.runtime.current
        if handle.pending >= runtime.max_queue_per_model:
            raise QueueFull(
                f"model {model.id!r} has too many requests queued; retry later", headers={"Retry-After": "1"}
            )
        handle.pending += 1
        try:
            async with self.admission.admit(model, runtime.gpu_policy):
                client = await self._ensure_ready(handle)
                handle.idle_timeout = self._idle_timeout(model)
                handle.in_flight += 1
                handle.last_used = time.monotonic()
                timeout = runtime.worker_request_timeout_seconds
                stream = client.infer_stream(
                    payload, request_id=uuid.uuid4().hex, idle_timeout=handle.idle_timeout, files=files
                )
                try:
                    while True:
                        try:
                            async with asyncio.timeout(timeout):  # per chunk: a stream may run long
                                status, line = await anext(stream)
                        except StopAsyncIteration:
                            raise WorkerCrashed(f"worker for model {model.id!r} ended the stream early") from None
                        if status != 200 or "error" in line:
                            error = line.get("error") or {}
                            raise from_worker_error(int(line.get("status", status)), error)
                        if line.get("done"):
                            handle.requests += 1
                            return
                        yield line["chunk"]
                except TimeoutError:
                    await self._stop_handle(handle, "timeout", grace=0)
                    raise InferenceTimeout(
                        f"model {model.id!r} produced nothing for {timeout:g} s; its worker was stopped"
                    ) from None
                except (aiohttp.ClientError, OSError):
                    code = await self._exit_code_after_failure(handle)
                    raise WorkerCrashed(
                        f"worker for model {model.id!r} failed during the stream ({describe_exit(code)})"
                    ) from None
                finally:
                    await stream.aclose()
                    handle.in_flight -= 1
                    handle.last_used = time.monotonic()
        finally:
            handle.pending -= 1

    def _idle_timeout(self, model: ModelEntry) -> float:
        """The model's override, else the runtime setting: read per request so a change reaches running workers."""
        if model.idle_timeout_seconds is not None:
            return model.idle_timeout_seconds
        return self.runtime.current.worker_idle_timeout_seconds

    async def _call(
        self, handle: WorkerHandle, client: WorkerClient, payload: dict[str, Any], files: Files | None
    ) -> dict[str, Any]:
        runtime = self.runtime.current
        timeout = runtime.worker_request_timeout_seconds
        handle.idle_timeout = self._idle_timeout(handle.model)
        handle.in_flight += 1
        handle.last_used = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                status, body = await client.infer(
                    payload, request_id=uuid.uuid4().hex, idle_timeout=handle.idle_timeout, files=files
                )
        except TimeoutError:
            await self._stop_handle(handle, "timeout", grace=0)
            raise InferenceTimeout(
                f"model {handle.model.id!r} did not answer within {timeout:g} s "
                "(worker_request_timeout_seconds); its worker was stopped"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            code = await self._exit_code_after_failure(handle)
            if handle.stop_reason == "timeout":
                raise InferenceTimeout(
                    f"model {handle.model.id!r}: its worker was stopped after the request timeout"
                ) from None
            if code == EXIT_IDLE and handle.stop_reason is None:
                raise _WorkerWentIdle from exc
            if handle.stop_reason in ("stopped", "shutdown"):
                raise ModelUnavailable(
                    f"the worker for model {handle.model.id!r} was stopped during the request "
                    "(stop requested, model changed or removed, or server shutting down)",
                    code="worker_stopped",
                    retry_after=1,
                ) from None
            raise WorkerCrashed(
                f"worker for model {handle.model.id!r} failed during the request ({describe_exit(code)}); "
                f"the next request starts a fresh worker. Log: {handle.log_path}"
            ) from None
        finally:
            handle.in_flight -= 1
            handle.last_used = time.monotonic()
        handle.requests += 1
        if status == 200:
            result: dict[str, Any] = body["result"]
            return result
        error = body.get("error") or {}
        if status == 503:
            raise ModelUnavailable(str(error.get("message", "model unavailable")), code=error.get("code"))
        raise from_worker_error(status, error)

    async def _exit_code_after_failure(self, handle: WorkerHandle) -> int | None:
        """After a broken connection: wait briefly for the process to exit; kill it if it lingers broken."""
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited.wait()), 2.0)
        except TimeoutError:
            await self._stop_handle(handle, "crash", grace=0)
        return handle.exit_code

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
                await self._stop_handle(handle, "stopped", grace=1)
            return await self._spawn(handle)

    async def _spawn(self, handle: WorkerHandle) -> WorkerClient:
        model = handle.model
        runtime = self.runtime.current
        interpreter = self._interpreter(model)
        socket_path = str(self.run_dir / f"w{next(self._seq)}.sock")
        handle.idle_timeout = self._idle_timeout(model)
        spec = WorkerSpec(
            model_id=model.id,
            task=model.task,
            backend=backend_reference(model.backend),
            source=model.source,
            socket_path=socket_path,
            device=model.device,
            threads=model.threads or 1,
            idle_timeout=handle.idle_timeout,
            max_batch_size=runtime.worker_max_batch_size,
            batch_wait_ms=runtime.worker_batch_wait_ms,
            parent_pid=_pid(),
            log_level=self.settings.log_level,
            data_dir=str(self.settings.data_dir),
            options=model.options,
        )
        token = secrets.token_urlsafe(32)
        log_path = self.settings.logs_dir / f"worker-{_safe(model.id)}.log"
        started = time.monotonic()
        process = await spawn_worker(spec, token, interpreter, log_path)
        handle.process, handle.socket_path, handle.log_path = process, socket_path, str(log_path)
        handle.state, handle.exit_code, handle.stop_reason = STARTING, None, None
        handle.started_at = started
        handle.spawns += 1
        handle.exited = asyncio.Event()
        handle.client = WorkerClient(socket_path, token)
        self.metrics.worker_spawns.labels(model.id).inc()
        self._track(self._watch_exit(handle, process))
        log.info("spawned worker pid=%s for %s (%s, python %s)", process.pid, model.id, spec.backend, interpreter)
        await self._wait_ready(handle, handle.client, started + runtime.worker_startup_timeout_seconds)
        handle.state, handle.ready_at = READY, time.monotonic()
        handle.last_used = handle.ready_at
        load_s = handle.ready_at - started
        self.metrics.worker_load_seconds.labels(model.id).observe(load_s)
        log.info("worker pid=%s for %s ready in %.2f s", process.pid, model.id, load_s)
        return handle.client

    async def _wait_ready(self, handle: WorkerHandle, client: WorkerClient, deadline: float) -> None:
        socket_path = Path(handle.socket_path or "")
        delay = 0.01
        while True:
            if handle.exited.is_set() or (handle.process and handle.process.returncode is not None):
                await asyncio.wait_for(handle.exited.wait(), 5)
                raise ModelUnavailable(
                    f"worker for model {handle.model.id!r} exited during start-up "
                    f"({describe_exit(handle.exit_code)}): {self._log_tail(handle)}",
                    code="model_load_failed",
                    retry_after=30,
                )
            if time.monotonic() > deadline:
                await self._stop_handle(handle, "startup", grace=0)
                raise ModelUnavailable(
                    f"model {handle.model.id!r} did not load within "
                    f"{self.runtime.current.worker_startup_timeout_seconds:g} s (worker_startup_timeout_seconds)",
                    code="model_load_timeout",
                )
            if socket_path.exists():
                try:
                    health = await client.health(timeout=2.0)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    health = {}
                if health.get("state") == WORKER_READY:
                    return
                if health.get("state") == ERROR:
                    await self._stop_handle(handle, "startup", grace=0)
                    raise ModelUnavailable(
                        f"model {handle.model.id!r} failed to load: {health.get('error')}",
                        code="model_load_failed",
                        retry_after=30,
                    )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    async def _watch_exit(self, handle: WorkerHandle, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()  # reaps the child: no zombies
        if handle.process is not process:
            return
        handle.exit_code = code
        handle.state = TERMINATED
        handle.exited.set()
        reason = handle.stop_reason or ("idle" if code == EXIT_IDLE else "crash")
        self.metrics.worker_evictions.labels(handle.model.id, reason).inc()
        self.metrics.workers.set(sum(1 for h in self._handles.values() if h.alive))
        level = logging.INFO if reason in ("idle", "stopped", "shutdown") else logging.WARNING
        log.log(
            level,
            "worker pid=%s for %s gone: %s (%s)",
            process.pid,
            handle.model.id,
            reason,
            describe_exit(code),
        )
        client, handle.client = handle.client, None
        if client is not None:
            await client.close()
        if handle.socket_path:
            with contextlib.suppress(OSError):
                Path(handle.socket_path).unlink()

    async def _stop_handle(self, handle: WorkerHandle, reason: str, grace: float = 5.0) -> None:
        process = handle.process
        if process is None or process.returncode is not None:
            return
        handle.stop_reason = reason
        await stop_process(process, grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.exited.wait(), 5)

    async def stop_worker(self, model_id: str) -> bool:
        """Stop a model's worker (its memory is freed); it respawns on next use. False if none was running."""
        handle = self._handles.get(model_id)
        if handle is None or not handle.alive:
            return False
        await self._stop_handle(handle, "stopped")
        return True

    def model_changed(self, model_id: str) -> None:
        """Catalog callback (any thread): a changed or removed model's worker must not keep serving."""
        if self._loop is not None and model_id in self._handles:
            self._loop.call_soon_threadsafe(lambda: self._track(self.stop_worker(model_id)))

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

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _log_tail(handle: WorkerHandle, limit: int = 1500) -> str:
        if not handle.log_path:
            return ""
        try:
            with open(handle.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - limit))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-6:])

    # -- introspection ---------------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        return [h.status() for h in sorted(self._handles.values(), key=lambda h: h.model.id) if h.alive]

    def queue_depths(self) -> dict[str, int]:
        return {h.model.id: h.pending for h in self._handles.values() if h.pending}

    def gpu_lock(self) -> dict[str, Any]:
        return {
            "held": self.admission.held,
            "holder": self.admission.holder,
            "waiters": self.admission.waiters,
        }


def worker_key(model: ModelEntry) -> str:
    return f"{model.task}:{model.id}" + (f":{model.python_env}" if model.python_env else "")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _pid() -> int:
    import os

    return os.getpid()


__all__ = ["Coordinator", "ModelhostError", "worker_key"]
