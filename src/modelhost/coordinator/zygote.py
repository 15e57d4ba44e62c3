"""Zygotes: forking model workers from a process that already imported the backend's libraries (cold start).

One zygote per backend (``package.module:Class``) of the server's own interpreter. Lifecycle:

* started lazily the first time a model of that backend starts (that first worker is still a plain spawn: it does
  not wait for the zygote), or eagerly by ``prestart`` (the coordinator's ``prestart_zygote``, for pinned models);
* once it listens, later workers of that backend are forked from it (``modelhost.worker.zygote``);
* kept while a worker of its backend runs, and for the runtime setting ``zygote_idle_timeout_seconds`` after the last
  one exited (-1: kept; 0: stopped with the last worker), unless a model keeps it (``prestart(keep=True)``); then it
  is stopped and its memory freed, and the next model of the backend starts it again.

Models of the server's interpreter use it, on the CPU or a GPU (a GPU worker initializes CUDA itself after the fork;
a zygote whose imports loaded the CUDA driver refuses GPU workers, which are then spawned plainly — see
``modelhost.worker.zygote``); a model opts out with the option ``zygote: false``. Any zygote
failure (not running, refused, crashed, slow) is a log line and a plain spawn, never a failed request; a zygote that
finds it cannot fork safely (``EXIT_NOT_FORKABLE``) puts its backend on plain spawns for the rest of the run.

The forked worker is the zygote's child, not the coordinator's: ``ForkedProcess`` learns its exit code from the
zygote's connection, or — when the zygote dies first — from a pidfd (exit code then unknown: ``EXIT_UNKNOWN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.coordinator.admission import zygote_ram
from modelhost.coordinator.footprint import zygote_estimate_bytes
from modelhost.worker.protocol import WorkerSpec, read_rss_bytes
from modelhost.worker.zygote import EXIT_NOT_FORKABLE, THREAD_VARS

log = logging.getLogger(__name__)

#: The exit code recorded for a forked worker whose zygote died before it (the real code is lost).
EXIT_UNKNOWN = 255
#: How long a zygote may take to import its libraries before it is given up on.
ZYGOTE_START_TIMEOUT = 120.0
#: After this many zygote failures for one backend, its models are plain-spawned for the rest of the run.
MAX_FAILURES = 3
#: How often the pool looks for zygotes to stop (idle) or forget (exited).
SWEEP_INTERVAL = 1.0


class ForkedProcess:
    """A worker forked by a zygote, with the part of ``asyncio.subprocess.Process``'s interface the supervisor
    uses: ``pid``, ``returncode``, ``wait()``, ``send_signal()``, ``kill()``."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._writer = writer
        self._done = asyncio.Event()
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(pid)
        self._task = asyncio.ensure_future(self._watch(reader))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                message = json.loads(line)
                if "exit" in message:
                    self._finish(int(message["exit"]))
                    return
        except (OSError, ValueError):
            pass
        # The zygote is gone before its child: watch the child through its pidfd (or poll its pid).
        log.warning("zygote of worker pid=%s is gone; watching the worker by pid (exit code will be unknown)", self.pid)
        while not self._gone():
            await asyncio.sleep(0.2)
        self._finish(EXIT_UNKNOWN)

    def _gone(self) -> bool:
        if self._pidfd is not None:
            import select

            return bool(select.select([self._pidfd], [], [], 0)[0])
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _finish(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._writer.close()
        self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass(frozen=True)
class ZygoteProcess:
    """A running zygote, for memory accounting. Workers forked from it share its pages copy-on-write, so the sum of
    the RSS of a zygote and its workers counts those pages more than once; PSS divides shared pages among the
    processes that map them (None where /proc has no ``smaps_rollup``)."""

    backend: str
    pid: int
    rss_bytes: int | None
    pss_bytes: int | None


class _Zygote:
    def __init__(
        self, backend: str, socket_path: str, process: asyncio.subprocess.Process, expected_bytes: int
    ) -> None:
        self.backend = backend
        self.socket_path = socket_path
        self.process = process
        self.started = time.monotonic()
        self.expected_bytes = expected_bytes  # reserved while it imports (see ``ZygotePool.reserved_bytes``)

    @property
    def ready(self) -> bool:
        return os.path.exists(self.socket_path)


class ZygotePool:
    """The zygotes of one coordinator, keyed by backend. ``idle_timeout`` is read at every sweep (a runtime
    setting: a change applies at once)."""

    def __init__(self, logs_dir: Path, idle_timeout: Callable[[], float] | None = None) -> None:
        self.logs_dir = logs_dir
        self.idle_timeout: Callable[[], float] = idle_timeout or (lambda: 120.0)
        self._zygotes: dict[str, _Zygote] = {}
        self._failures: dict[str, int] = {}
        self._workers: dict[str, int] = {}  # backend → running workers (spawned or forked) of models that fork
        self._idle_since: dict[str, float] = {}  # backend → when its last worker exited
        self._kept: dict[str, str] = {}  # model id → backend: zygotes kept without workers (pinned models)
        self._no_gpu_forks: set[str] = set()  # backends whose zygote refused a GPU worker (CUDA loaded at import)
        self._measured: dict[str, int] = {}  # backend → RSS of its zygote once it listened (in this process)
        self._sweeper: asyncio.Task[None] | None = None
        self._seq = 0

    @staticmethod
    def eligible(spec: WorkerSpec, interpreter: str) -> bool:
        return (
            sys.platform.startswith("linux")
            and (spec.device == "cpu" or spec.device.startswith("cuda"))
            and spec.options.get("zygote", True) not in (False, "false", "no", 0)
            and os.path.realpath(interpreter) == os.path.realpath(sys.executable)
        )

    def _usable(self, spec: WorkerSpec, interpreter: str) -> bool:
        if spec.device != "cpu" and spec.backend in self._no_gpu_forks:
            return False
        return self.eligible(spec, interpreter) and self._failures.get(spec.backend, 0) < MAX_FAILURES

    async def spawn(
        self, spec: WorkerSpec, env: dict[str, str], interpreter: str, log_path: Path, start: bool = True
    ) -> ForkedProcess | None:
        """Fork ``spec``'s worker from its backend's zygote; None when it cannot (the caller spawns it plainly).
        ``start=False``: when the backend has no zygote, do not start one (memory admission found no room for it)."""
        if not self._usable(spec, interpreter):
            return None
        zygote = self._running(spec.backend)
        if zygote is None:
            if start and self._usable(spec, interpreter):
                await self._start(spec, env)
            return None
        if not zygote.ready:
            if time.monotonic() - zygote.started > ZYGOTE_START_TIMEOUT:
                self._fail(spec.backend, "the zygote did not start in time")
                await _stop(zygote.process)
            return None  # still importing: this worker is a plain spawn
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(zygote.socket_path), 5)
            writer.write(json.dumps({"env": env, "log": str(log_path)}).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
            if "refused" in answer:  # a GPU worker, and the zygote's imports initialized CUDA
                writer.close()
                self._no_gpu_forks.add(spec.backend)
                log.warning("GPU workers of %s are spawned plainly: %s", spec.backend, answer["refused"])
                return None
            return ForkedProcess(int(answer["pid"]), reader, writer)
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            if self._zygotes.get(spec.backend) is not zygote:  # stopped for idleness meanwhile: no failure
                return None
            self._fail(spec.backend, f"{type(exc).__name__}: {exc}")
            await _stop(zygote.process)
            return None

    async def prestart(self, spec: WorkerSpec, env: dict[str, str], interpreter: str, keep: bool = True) -> bool:
        """Start ``spec``'s backend zygote now rather than with its first worker. ``keep``: the zygote stays while
        no worker of its backend runs, until ``release(spec.model_id)`` (for pinned models). True when the backend
        has a zygote (running or importing); False when ``spec`` cannot use one."""
        if not self._usable(spec, interpreter):
            return False
        if keep:
            self.keep(spec)
        if self._running(spec.backend) is None:
            await self._start(spec, env)
        return spec.backend in self._zygotes

    def keep(self, spec: WorkerSpec) -> None:
        """``spec.model_id`` keeps its backend's zygote while no worker runs (a pinned model), from whenever it
        starts, until ``release(spec.model_id)``."""
        self._kept[spec.model_id] = spec.backend

    def will_start(self, spec: WorkerSpec, interpreter: str) -> bool:
        """Would spawning ``spec``'s worker start its backend's zygote? Only for a model that forks (not ``zygote:
        false``, not another Python environment, backend not on plain spawns) whose backend has no zygote running or
        importing."""
        if not self._usable(spec, interpreter):
            return False
        zygote = self._zygotes.get(spec.backend)
        return zygote is None or zygote.process.returncode is not None

    def will_fork(self, spec: WorkerSpec, interpreter: str) -> bool:
        """Would spawning ``spec``'s worker now fork it from a listening zygote?"""
        zygote = self._zygotes.get(spec.backend)
        return (
            zygote is not None
            and zygote.process.returncode is None
            and zygote.ready
            and self._usable(spec, interpreter)
        )

    def expected_bytes(self, backend: str) -> int:
        """What ``backend``'s zygote will hold once imported: its RSS when it last listened in this process, else
        the backend's base (``footprint.zygote_estimate_bytes``)."""
        return self._measured.get(backend) or zygote_estimate_bytes(backend)

    def reserved_bytes(self) -> int:
        """RAM the running zygotes count for in memory admission (fixed: no eviction frees it). One that listens
        counts at its RSS (its imports are done; remembered as its backend's size for the next start); one still
        importing at the larger of its RSS and its expected size, so the libraries it is loading are reserved."""
        total = 0
        for backend, zygote in list(self._zygotes.items()):
            if zygote.process.returncode is not None:
                continue
            rss = read_rss_bytes(zygote.process.pid)
            listening = zygote.ready
            if listening and rss:
                self._measured[backend] = rss
            total += zygote_ram(rss, listening, zygote.expected_bytes)
        return total

    def release(self, model_id: str) -> None:
        """``model_id`` no longer keeps its backend's zygote (unpinned): it stops after the idle timeout."""
        backend = self._kept.pop(model_id, None)
        if backend is not None and backend not in self._kept.values():
            self._idle_since[backend] = time.monotonic()

    def worker_started(self, spec: WorkerSpec, interpreter: str) -> str | None:
        """Count a running worker of ``spec``'s backend (a zygote is kept while one runs); returns the key to hand
        to ``worker_gone`` when it exits, None for workers that never fork."""
        if not self.eligible(spec, interpreter):
            return None
        self._workers[spec.backend] = self._workers.get(spec.backend, 0) + 1
        return spec.backend

    def worker_gone(self, backend: str) -> None:
        left = self._workers.get(backend, 0) - 1
        self._workers[backend] = max(0, left)
        if left <= 0:
            self._idle_since[backend] = time.monotonic()

    def _running(self, backend: str) -> _Zygote | None:
        """``backend``'s zygote unless it has exited: then it is forgotten and counted as a failure (a zygote
        stopped for its idle timeout is removed before it exits, so it never gets here)."""
        zygote = self._zygotes.get(backend)
        if zygote is None or zygote.process.returncode is None:
            return zygote
        code = zygote.process.returncode
        if code == EXIT_NOT_FORKABLE:
            self._zygotes.pop(backend, None)
            self._failures[backend] = MAX_FAILURES
            log.warning(
                "zygote for %s cannot fork safely (%s has why); its models are plain-spawned",
                backend,
                self.logs_dir / "zygotes.log",
            )
        else:
            self._fail(backend, f"the zygote exited ({code})")
        return None

    def _fail(self, backend: str, why: str) -> None:
        self._failures[backend] = self._failures.get(backend, 0) + 1
        self._zygotes.pop(backend, None)
        log.warning("zygote for %s failed (%s); plain spawn instead", backend, why)

    async def _start(self, spec: WorkerSpec, env: dict[str, str]) -> None:
        self._seq += 1
        socket_path = str(Path(spec.socket_path).parent / f"z{os.getpid()}-{self._seq}.sock")
        zenv = {k: v for k, v in env.items() if not k.startswith("MODELHOST_")}
        zenv.update(dict.fromkeys(THREAD_VARS, "1"))  # one thread while importing: a fork must see no others
        log_path = self.logs_dir / "zygotes.log"
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)  # a prestart can come before any worker's log
            with open(log_path, "ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "modelhost.worker.zygote",
                    socket_path,
                    spec.backend,
                    str(os.getpid()),  # the zygote exits once this process is no longer its parent
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=zenv,
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail(spec.backend, f"cannot start: {exc}")
            return
        self._zygotes[spec.backend] = _Zygote(spec.backend, socket_path, process, self.expected_bytes(spec.backend))
        log.info("starting zygote pid=%s for %s (socket %s)", process.pid, spec.backend, socket_path)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        """Stop zygotes whose backend has had no worker for the idle timeout (and no model keeps them); forget
        exited ones. Runs while there are zygotes."""
        while self._zygotes:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self._stop_idle()
            except Exception:
                log.exception("zygote sweep failed")

    async def _stop_idle(self) -> None:
        timeout = self.idle_timeout()
        for backend in list(self._zygotes):
            zygote = self._running(backend)
            if zygote is None or timeout < 0 or self._workers.get(backend, 0) > 0 or backend in self._kept.values():
                continue
            idle = time.monotonic() - max(self._idle_since.get(backend, 0.0), zygote.started)
            if idle < timeout:
                continue
            del self._zygotes[backend]
            log.info(
                "stopping zygote pid=%s for %s: no worker of its backend for %.0f s (zygote_idle_timeout_seconds)",
                zygote.process.pid,
                backend,
                idle,
            )
            await _stop(zygote.process)
            with contextlib.suppress(OSError):
                os.unlink(zygote.socket_path)

    def pids(self) -> dict[str, int]:
        return {backend: z.process.pid for backend, z in self._zygotes.items() if z.process.returncode is None}

    def processes(self) -> list[ZygoteProcess]:
        """The running zygotes with their memory (for memory accounting: a zygote counts against the budget)."""
        return [
            ZygoteProcess(backend, pid, read_rss_bytes(pid), read_pss_bytes(pid))
            for backend, pid in sorted(self.pids().items())
        ]

    def status(self) -> list[dict[str, Any]]:
        """One entry per zygote, for ``/v1/workers`` and ``/api/health``."""
        now = time.monotonic()
        out = []
        for backend, zygote in sorted(self._zygotes.items()):
            if zygote.process.returncode is not None:
                continue
            workers = self._workers.get(backend, 0)
            rss = read_rss_bytes(zygote.process.pid)
            idle_since = max(self._idle_since.get(backend, 0.0), zygote.started)
            out.append(
                {
                    "backend": backend,
                    "pid": zygote.process.pid,
                    "state": "READY" if zygote.ready else "STARTING",
                    "workers": workers,
                    "kept_for": sorted(m for m, b in self._kept.items() if b == backend),
                    "idle_seconds": None if workers else round(now - idle_since, 3),
                    "idle_timeout": self.idle_timeout(),
                    "rss_bytes": rss,
                    "memory_mb": round((rss or 0) / 2**20, 1),
                    "socket": zygote.socket_path,
                }
            )
        return out

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        zygotes, self._zygotes = list(self._zygotes.values()), {}
        await asyncio.gather(*(_stop(z.process) for z in zygotes))
        for z in zygotes:
            with contextlib.suppress(OSError):
                os.unlink(z.socket_path)


def read_pss_bytes(pid: int) -> int | None:
    """Proportional set size from ``/proc/<pid>/smaps_rollup`` (Linux ≥ 4.14); None when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


__all__ = ["EXIT_UNKNOWN", "ForkedProcess", "ZygotePool", "ZygoteProcess", "read_pss_bytes"]
