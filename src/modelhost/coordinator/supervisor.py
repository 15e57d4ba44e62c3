"""Worker process supervision: spawn, wait for readiness, watch for exit, stop, and read a worker's log.

The coordinator's request path (``coordinator.py``) asks this module for a ready ``WorkerClient`` and to stop
workers; it never touches processes itself. Spawning sits behind one function (``spawn_worker``) so a zygote can
replace it later. ``stop_process``/``stop_popen`` (terminate, wait, kill) are also what the test-suite uses to stop
the servers it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from modelhost.coordinator.client import WorkerClient
from modelhost.coordinator.handles import READY, STARTING, TERMINATED, WorkerHandle
from modelhost.coordinator.zygote import ForkedProcess, ZygotePool
from modelhost.errors import ModelUnavailable
from modelhost.metrics import Metrics
from modelhost.worker.frames import stream_socket_path
from modelhost.worker.protocol import ERROR, EXIT_IDLE, OUT_OF_MEMORY, SPEC_ENV, TOKEN_ENV, WorkerSpec
from modelhost.worker.protocol import READY as WORKER_READY

log = logging.getLogger(__name__)

#: A worker process: spawned (``asyncio.subprocess.Process``) or forked by a zygote (``ForkedProcess``).
WorkerProcess = asyncio.subprocess.Process | ForkedProcess

# Variables that would make a worker ignore its thread budget or the settings the coordinator hands it.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
LOG_ROTATE_BYTES = 10 * 1024 * 1024
#: How long one start-up ``/healthz`` may be held by a loading worker (``?wait=``) before it answers STARTING.
HEALTH_WAIT = 1.0
#: Load failures that will fail again the same way: answered 503 without Retry-After (see ``load_failure``).
PERMANENT_LOAD_CODES = frozenset(
    {"model_package_missing", "model_files_missing", "model_not_found", "dependency_missing", "ffmpeg_missing"}
)


class Supervisor:
    """Starts and stops the worker processes of ``WorkerHandle``s; one per coordinator."""

    def __init__(
        self,
        metrics: Metrics,
        logs_dir: Path,
        count_alive: Callable[[], int],
        zygote_idle_timeout: Callable[[], float] | None = None,
    ) -> None:
        self.metrics = metrics
        self.logs_dir = logs_dir
        self._count_alive = count_alive
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.zygotes = ZygotePool(logs_dir, zygote_idle_timeout)

    async def spawn(
        self,
        handle: WorkerHandle,
        spec: WorkerSpec,
        interpreter: str,
        startup_timeout: float,
        start_zygote: bool = True,
    ) -> None:
        """Start ``handle``'s worker and wait until it is READY (``handle.client`` is then set). Raises
        ``ModelUnavailable`` when it exits during start-up, reports a load error, or is not ready in time.
        ``start_zygote=False``: do not start the backend's zygote beside it (no room for it in the memory budget)."""
        model = handle.model
        token = secrets.token_urlsafe(32)
        log_path = self.logs_dir / f"worker-{_safe(model.id)}.log"
        started = time.monotonic()
        process = await spawn_worker(spec, token, interpreter, log_path, self.zygotes, start_zygote)
        family = self.zygotes.worker_started(spec, interpreter)  # keeps the backend's zygote while it runs
        handle.process, handle.socket_path, handle.log_path = process, spec.socket_path, str(log_path)
        handle.state, handle.exit_code, handle.stop_reason = STARTING, None, None
        handle.started_at = started
        handle.spawns += 1
        handle.exited = asyncio.Event()
        handle.client = WorkerClient(spec.socket_path, token)
        self.metrics.worker_spawns.labels(model.id).inc()
        self.track(self._watch_exit(handle, process, family))
        how = "forked by zygote" if isinstance(process, ForkedProcess) else "spawned"
        log.info("%s worker pid=%s for %s (%s, python %s)", how, process.pid, model.id, spec.backend, interpreter)
        await self._wait_ready(handle, handle.client, started + startup_timeout, startup_timeout)
        handle.state, handle.ready_at = READY, time.monotonic()
        handle.last_used = handle.ready_at
        load_s = handle.ready_at - started
        self.metrics.worker_load_seconds.labels(model.id).observe(load_s)
        log.info("worker pid=%s for %s ready in %.2f s", process.pid, model.id, load_s)

    def socket_path(self, run_dir: Path) -> str:
        return str(run_dir / f"w{next(self._seq)}.sock")

    async def _wait_ready(self, handle: WorkerHandle, client: WorkerClient, deadline: float, timeout: float) -> None:
        socket_path = Path(handle.socket_path or "")
        delay = 0.01
        while True:
            if handle.exited.is_set() or (handle.process and handle.process.returncode is not None):
                await asyncio.wait_for(handle.exited.wait(), 5)
                log.warning(
                    "worker for %s exited during start-up (%s); log %s: %s",
                    handle.model.id,
                    describe_exit(handle.exit_code),
                    handle.log_path,
                    log_tail(handle.log_path),
                )
                if handle.exit_code == -signal.SIGKILL and handle.stop_reason is None:
                    raise ModelUnavailable(
                        f"the worker for model {handle.model.id!r} was killed (SIGKILL) while loading, most likely by "
                        "the kernel's out-of-memory killer",
                        code=OUT_OF_MEMORY,
                        retry_after=30,
                    )
                raise ModelUnavailable(
                    f"the worker for model {handle.model.id!r} exited during start-up "
                    f"({describe_exit(handle.exit_code)}); the server log has details",
                    code="model_load_failed",
                    retry_after=30,
                )
            if time.monotonic() > deadline:
                await self.stop(handle, "startup", grace=0)
                raise ModelUnavailable(
                    f"model {handle.model.id!r} did not load within {timeout:g} s (worker_startup_timeout_seconds)",
                    code="model_load_timeout",
                )
            if socket_path.exists():
                # Held by the worker until loading ends (at most 1 s, so an exit during start-up is noticed soon
                # after the broken connection): READY is learnt at once rather than at the next poll.
                wait = max(0.0, min(HEALTH_WAIT, deadline - time.monotonic()))
                try:
                    health = await client.health(timeout=2.0, wait=wait)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    health = {}
                if health.get("state") == WORKER_READY:
                    return
                if health.get("state") == ERROR:
                    await self.stop(handle, "startup", grace=0)
                    raise load_failure(handle.model.id, health)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    async def _watch_exit(self, handle: WorkerHandle, process: WorkerProcess, family: str | None = None) -> None:
        code = await process.wait()  # reaps the child: no zombies
        if family is not None:
            self.zygotes.worker_gone(family)
        if handle.process is not process:
            return
        handle.exit_code = code
        handle.state = TERMINATED
        handle.exited.set()
        reason = handle.stop_reason or ("idle" if code == EXIT_IDLE else "crash")
        self.metrics.worker_evictions.labels(handle.model.id, reason).inc()
        self.metrics.workers.set(self._count_alive())
        level = logging.INFO if reason in ("idle", "stopped", "shutdown", "evicted", "over_budget") else logging.WARNING
        log.log(level, "worker pid=%s for %s gone: %s (%s)", process.pid, handle.model.id, reason, describe_exit(code))
        client, handle.client = handle.client, None
        if client is not None:
            await client.close()
        if handle.socket_path:  # a killed worker could not remove its sockets
            for path in (handle.socket_path, stream_socket_path(handle.socket_path)):
                with contextlib.suppress(OSError):
                    Path(path).unlink()

    async def stop(self, handle: WorkerHandle, reason: str, grace: float = 5.0) -> None:
        # reasons: stopped, changed (catalog entry), evicted (memory admission), over_budget (memory watchdog),
        # timeout, crash, startup, shutdown
        """Stop ``handle``'s process (SIGTERM, then SIGKILL after ``grace``); ``reason`` is recorded."""
        process = handle.process
        if process is None or process.returncode is not None:
            return
        handle.stop_reason = reason
        await stop_process(process, grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.exited.wait(), 5)

    async def exit_code_after_failure(self, handle: WorkerHandle) -> int | None:
        """After a broken connection: wait briefly for the process to exit; kill it if it lingers broken."""
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited.wait()), 2.0)
        except TimeoutError:
            await self.stop(handle, "crash", grace=0)
        return handle.exit_code

    async def prestart_zygote(self, spec: WorkerSpec, interpreter: str, keep: bool = True) -> bool:
        """Start the zygote of ``spec``'s backend now (``ZygotePool.prestart``)."""
        return await self.zygotes.prestart(spec, worker_environment(spec, ""), interpreter, keep=keep)

    def track(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, kept referenced until done (cancelled by ``cancel_tasks``)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        """Stop the zygotes (after the workers)."""
        await self.zygotes.close()


def load_failure(model_id: str, health: dict[str, Any]) -> ModelUnavailable:
    """The 503 for a worker that reported a load error on ``/healthz``. A permanent failure (a missing package,
    path or file: ``error_code`` in ``PERMANENT_LOAD_CODES``) has no Retry-After: retrying cannot help."""
    message = str(health.get("error") or "unknown error")
    code = health.get("error_code")
    if isinstance(code, str) and code in PERMANENT_LOAD_CODES:
        return ModelUnavailable(f"model {model_id!r} cannot be loaded: {message}", code=code, retry_after=None)
    if code == OUT_OF_MEMORY:
        return ModelUnavailable(f"model {model_id!r} failed to load: {message}", code=OUT_OF_MEMORY, retry_after=30)
    return ModelUnavailable(f"model {model_id!r} failed to load: {message}", code="model_load_failed", retry_after=30)


def worker_environment(spec: WorkerSpec, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("MODELHOST_")}
    for var in _THREAD_VARS:
        env[var] = str(spec.threads)
    env["TOKENIZERS_PARALLELISM"] = "true" if spec.threads > 1 else "false"
    env["PYTHONUNBUFFERED"] = "1"
    env[SPEC_ENV] = spec.to_env()
    env[TOKEN_ENV] = token
    return env


async def spawn_worker(
    spec: WorkerSpec,
    token: str,
    interpreter: str,
    log_path: Path,
    zygotes: ZygotePool | None = None,
    start_zygote: bool = True,
) -> WorkerProcess:
    """Start ``spec``'s worker: forked from its backend's zygote when ``zygotes`` can (see
    ``modelhost.coordinator.zygote``), otherwise a new ``interpreter -m modelhost.worker`` process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > LOG_ROTATE_BYTES:  # keep one previous log per model
            log_path.replace(log_path.with_suffix(log_path.suffix + ".1"))
    env = worker_environment(spec, token)
    if zygotes is not None:
        forked = await zygotes.spawn(spec, env, interpreter, log_path, start=start_zygote)
        if forked is not None:
            return forked
    with open(log_path, "ab") as log_file:
        return await asyncio.create_subprocess_exec(
            interpreter,
            "-m",
            "modelhost.worker",
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in the server's terminal is for the server, which stops workers
        )


async def stop_process(process: WorkerProcess, grace: float = 5.0) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code (the process is reaped)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    return await process.wait()


def stop_popen(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """The same for a ``subprocess.Popen`` (used by tests and benchmarks to stop servers)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def log_tail(log_path: str | None, limit: int = 1500) -> str:
    """The last lines of a worker log, for the server's own log (never for an API answer)."""
    if not log_path:
        return ""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-6:])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
