"""A zygote whose coordinator is gone exits by itself — also when the coordinator died (``kill -9``) before the
zygote finished importing, so that the zygote never saw it as its parent: it must not live on under init for ever
(before the coordinator passed its pid, such a zygote did)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BACKEND = "tests.support.backends:SleepyEmbeddings"
#: The "coordinator": starts the zygote with its own pid, as the coordinator does; then waits (or exits at once).
STARTER = (
    "import os, subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-m', 'modelhost.worker.zygote', sys.argv[1], sys.argv[2],"
    " str(os.getpid())], start_new_session=True)\n"
    "print(p.pid, flush=True)\n"
    "if sys.argv[3] == 'exit':\n"
    "    os._exit(0)\n"
    "time.sleep(600)\n"
)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie (reaped by init soon) is gone too
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def start(socket_path: Path, then: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(socket_path), BACKEND, then], env=env, stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    return starter, int(starter.stdout.readline())


def test_a_zygote_exits_when_its_coordinator_is_killed(tmp_path: Path) -> None:
    socket_path = tmp_path / "z.sock"
    starter, zygote = start(socket_path, "wait")
    try:
        assert wait_until(socket_path.exists, 60), "the zygote never listened"
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait()
        assert wait_until(lambda: gone(zygote), 10), "the zygote outlived its coordinator"
        assert not socket_path.exists()
    finally:
        starter.kill()
        if not gone(zygote):
            os.kill(zygote, signal.SIGKILL)


def test_a_zygote_whose_coordinator_died_before_it_started_exits(tmp_path: Path) -> None:
    socket_path = tmp_path / "z.sock"
    starter, zygote = start(socket_path, "exit")
    starter.wait()
    try:
        assert wait_until(lambda: gone(zygote), 60), "the orphaned zygote kept running"
        assert not socket_path.exists()
    finally:
        if not gone(zygote):
            os.kill(zygote, signal.SIGKILL)


def test_the_parent_pid_argument_is_checked() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "modelhost.worker.zygote", "/nonexistent/z.sock", BACKEND, "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "usage" in bad.stderr
