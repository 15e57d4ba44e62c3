"""``/healthz?wait=``: a loading worker holds the answer until its load ends (the coordinator's start-up wait learns
READY at once instead of at its next poll), and answers at once without ``wait`` or once loaded."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from modelhost.worker.protocol import SPEC_ENV, TOKEN_ENV, TOKEN_HEADER, WorkerSpec

REPO = Path(__file__).resolve().parents[2]
TOKEN = "health-wait-token"
LOAD_SECONDS = 1.5


def start_worker(tmp_path: Path, **options: Any) -> tuple[subprocess.Popen[bytes], Path]:
    socket_path = tmp_path / "w.sock"
    spec = WorkerSpec(
        "sleepy",
        "embeddings",
        "tests.support.backends:SleepyEmbeddings",
        "none",
        str(socket_path),
        idle_timeout=-1,
        options=options,
    )
    env = {**os.environ, SPEC_ENV: spec.to_env(), TOKEN_ENV: TOKEN, "MODELHOST_ALLOW_CUSTOM_BACKENDS": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - kept open for the process's life
    process = subprocess.Popen([sys.executable, "-m", "modelhost.worker"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        assert process.poll() is None, (tmp_path / "worker.log").read_text()
        assert time.monotonic() < deadline, "the worker did not listen within 30 s"
        time.sleep(0.01)
    return process, socket_path


async def health(socket_path: Path, query: str = "") -> tuple[dict[str, Any], float]:
    """The body of ``/healthz{query}`` and how long it took."""
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector, headers={TOKEN_HEADER: TOKEN}) as session:
        started = time.monotonic()
        async with session.get(f"http://worker/healthz{query}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
        return body, time.monotonic() - started


def test_health_wait_answers_when_the_load_ends(tmp_path: Path) -> None:
    process, socket_path = start_worker(tmp_path, load_seconds=LOAD_SECONDS)
    try:
        listening = time.monotonic()
        now, took = asyncio.run(health(socket_path))
        assert now["state"] == "STARTING"
        assert took < LOAD_SECONDS
        waited, took = asyncio.run(health(socket_path, "?wait=30"))  # held, at most 5 s (MAX_HEALTH_WAIT)
        assert waited["state"] == "READY"
        assert time.monotonic() - listening < 5.0  # answered when the load ended, not after the wait ran out
        again, took = asyncio.run(health(socket_path, "?wait=5"))  # loaded: no wait
        assert again["state"] == "READY"
        assert took < 1.0
    finally:
        process.kill()
        process.wait()


def test_health_wait_is_bounded_and_reports_a_failed_load(tmp_path: Path) -> None:
    process, socket_path = start_worker(tmp_path, load_seconds=LOAD_SECONDS, fail_load=True)
    try:
        short, took = asyncio.run(health(socket_path, "?wait=0.2"))
        assert short["state"] == "STARTING"
        assert 0.15 <= took < LOAD_SECONDS
        for bad in ("?wait=soon", "?wait=nan", "?wait=-3"):  # unreadable or negative: no wait
            body, took = asyncio.run(health(socket_path, bad))
            assert body["state"] == "STARTING"
            assert took < LOAD_SECONDS
        failed, _took = asyncio.run(health(socket_path, "?wait=5"))
        assert failed["state"] == "ERROR"
        assert "fail while loading" in failed["error"]
    finally:
        process.kill()
        process.wait()
