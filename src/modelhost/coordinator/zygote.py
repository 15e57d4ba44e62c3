"""Zygotes: forking model workers from a process that already imported the backend's libraries (cold start).

One zygote per backend (``package.module:Class``) of the server's own interpreter, started lazily the first time a
model of that backend starts (that first worker is still a plain spawn: it does not wait for the zygote). Once the
zygote listens, later workers of that backend are forked from it (``modelhost.worker.zygote``). Only CPU models
of the server's interpreter use it; a model opts out with the option ``zygote: false``. Any zygote failure
(not running, refused, crashed, slow) is a log line and a plain spawn, never a failed request.

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
from pathlib import Path

from modelhost.worker.protocol import WorkerSpec

log = logging.getLogger(__name__)

#: The exit code recorded for a forked worker whose zygote died before it (the real code is lost).
EXIT_UNKNOWN = 255
#: How long a zygote may take to import its libraries before it is given up on.
ZYGOTE_START_TIMEOUT = 120.0
#: After this many zygote failures for one backend, its models are plain-spawned for the rest of the run.
MAX_FAILURES = 3


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


class _Zygote:
    def __init__(self, backend: str, socket_path: str, process: asyncio.subprocess.Process) -> None:
        self.backend = backend
        self.socket_path = socket_path
        self.process = process
        self.started = time.monotonic()


class ZygotePool:
    """The zygotes of one coordinator, keyed by backend."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self._zygotes: dict[str, _Zygote] = {}
        self._failures: dict[str, int] = {}
        self._seq = 0

    @staticmethod
    def eligible(spec: WorkerSpec, interpreter: str) -> bool:
        return (
            sys.platform.startswith("linux")
            and spec.device == "cpu"
            and spec.options.get("zygote", True) not in (False, "false", "no", 0)
            and os.path.realpath(interpreter) == os.path.realpath(sys.executable)
        )

    async def spawn(
        self, spec: WorkerSpec, env: dict[str, str], interpreter: str, log_path: Path
    ) -> ForkedProcess | None:
        """Fork ``spec``'s worker from its backend's zygote; None when it cannot (the caller spawns it plainly)."""
        if not self.eligible(spec, interpreter) or self._failures.get(spec.backend, 0) >= MAX_FAILURES:
            return None
        zygote = self._zygotes.get(spec.backend)
        if zygote is not None and zygote.process.returncode is not None:
            self._fail(spec.backend, f"the zygote exited ({zygote.process.returncode})")
            zygote = None
        if zygote is None:
            await self._start(spec, env)
            return None
        if not os.path.exists(zygote.socket_path):
            if time.monotonic() - zygote.started > ZYGOTE_START_TIMEOUT:
                self._fail(spec.backend, "the zygote did not start in time")
                await _stop(zygote.process)
            return None  # still importing: this worker is a plain spawn
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(zygote.socket_path), 5)
            writer.write(json.dumps({"env": env, "log": str(log_path)}).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
            return ForkedProcess(int(answer["pid"]), reader, writer)
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            self._fail(spec.backend, f"{type(exc).__name__}: {exc}")
            await _stop(zygote.process)
            return None

    def _fail(self, backend: str, why: str) -> None:
        self._failures[backend] = self._failures.get(backend, 0) + 1
        self._zygotes.pop(backend, None)
        log.warning("zygote for %s failed (%s); plain spawn instead", backend, why)

    async def _start(self, spec: WorkerSpec, env: dict[str, str]) -> None:
        self._seq += 1
        socket_path = str(Path(spec.socket_path).parent / f"z{os.getpid()}-{self._seq}.sock")
        zenv = {k: v for k, v in env.items() if not k.startswith("MODELHOST_")}
        log_path = self.logs_dir / "zygotes.log"
        try:
            with open(log_path, "ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "modelhost.worker.zygote",
                    socket_path,
                    spec.backend,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=zenv,
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail(spec.backend, f"cannot start: {exc}")
            return
        self._zygotes[spec.backend] = _Zygote(spec.backend, socket_path, process)
        log.info("starting zygote pid=%s for %s (socket %s)", process.pid, spec.backend, socket_path)

    def pids(self) -> dict[str, int]:
        return {backend: z.process.pid for backend, z in self._zygotes.items() if z.process.returncode is None}

    async def close(self) -> None:
        zygotes, self._zygotes = list(self._zygotes.values()), {}
        await asyncio.gather(*(_stop(z.process) for z in zygotes))
        for z in zygotes:
            with contextlib.suppress(OSError):
                os.unlink(z.socket_path)


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


__all__ = ["EXIT_UNKNOWN", "ForkedProcess", "ZygotePool"]
