"""``Coordinator.prestart_zygote`` with real processes: a prestarted zygote makes the first worker of its backend a
fork, is kept without workers while a model keeps it, and stops after the idle timeout once released."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate
from tests.support.services import in_process_services

SLEEPY = "tests.support.backends:SleepyEmbeddings"


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    pinned = ModelCreate(id="pinned", task="embeddings", backend=SLEEPY, source="-")
    opted_out = ModelCreate(id="opted-out", task="embeddings", backend=SLEEPY, source="-", options={"zygote": False})
    with in_process_services(tmp_path, monkeypatch, pinned, opted_out) as services:
        services.runtime.update({"zygote_idle_timeout_seconds": 0})
        yield services


async def until(predicate: object, timeout: float = 60) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():  # type: ignore[operator]  # a callable
            return True
        await asyncio.sleep(0.05)
    return False


def test_prestarted_zygote_forks_the_first_worker_and_is_kept_until_released(services: Services) -> None:
    coordinator = services.coordinator
    pinned = services.catalog.get_or_raise("pinned")

    async def main() -> None:
        await coordinator.start()
        try:
            assert not await coordinator.prestart_zygote(services.catalog.get_or_raise("opted-out"))
            assert await coordinator.prestart_zygote(pinned)
            assert await until(lambda: [z["state"] for z in coordinator.zygotes()] == ["READY"])
            [zygote] = coordinator.zygotes()
            assert zygote["kept_for"] == ["pinned"]
            [process] = coordinator.supervisor.zygotes.processes()
            assert process.pid == zygote["pid"]
            assert process.rss_bytes is not None
            assert process.rss_bytes > 10 * 2**20
            assert process.pss_bytes is not None
            assert 0 < process.pss_bytes <= process.rss_bytes

            await coordinator.infer(pinned, {"model": "pinned", "input": ["hello"]})
            [worker] = coordinator.workers()
            assert worker["started_by"] == "zygote"  # the first worker of the backend, forked: no plain spawn
            assert coordinator.zygotes()[0]["workers"] == 1
            assert await coordinator.stop_worker("pinned")

            # idle timeout 0, no worker left: kept all the same, for the model that keeps it
            await asyncio.sleep(2.5)
            assert [z["pid"] for z in coordinator.zygotes()] == [process.pid]
            assert coordinator.zygotes()[0]["idle_seconds"] >= 2
            assert await coordinator.prestart_zygote(pinned)  # already running: the same zygote
            assert [z["pid"] for z in coordinator.zygotes()] == [process.pid]

            coordinator.supervisor.zygotes.release("pinned")
            assert await until(lambda: not coordinator.zygotes(), timeout=5)
            assert coordinator.supervisor.zygotes.processes() == []
            assert await until(lambda: not Path(f"/proc/{process.pid}").exists(), timeout=5)
        finally:
            await coordinator.stop()

    asyncio.run(main())
