"""Starting and stopping worker processes, behind one function so a zygote can replace it later.

``stop_process`` (terminate, wait, kill) is also what the test-suite uses to stop servers it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from modelhost.worker.protocol import SPEC_ENV, TOKEN_ENV, WorkerSpec

# Variables that would make a worker ignore its thread budget or the settings the coordinator hands it.
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def worker_environment(spec: WorkerSpec, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("MODELHOST_")}
    for var in _THREAD_VARS:
        env[var] = str(spec.threads)
    env["TOKENIZERS_PARALLELISM"] = "true" if spec.threads > 1 else "false"
    env["PYTHONUNBUFFERED"] = "1"
    env[SPEC_ENV] = spec.to_env()
    env[TOKEN_ENV] = token
    return env


LOG_ROTATE_BYTES = 10 * 1024 * 1024


async def spawn_worker(spec: WorkerSpec, token: str, interpreter: str, log_path: Path) -> asyncio.subprocess.Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > LOG_ROTATE_BYTES:  # keep one previous log per model
            log_path.replace(log_path.with_suffix(log_path.suffix + ".1"))
    with open(log_path, "ab") as log_file:
        return await asyncio.create_subprocess_exec(
            interpreter,
            "-m",
            "modelhost.worker",
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=worker_environment(spec, token),
            start_new_session=True,  # a Ctrl-C in the server's terminal is for the server, which stops workers
        )


async def stop_process(process: asyncio.subprocess.Process, grace: float = 5.0) -> int:
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
