"""``Coordinator.prestart_zygote`` with real processes: a prestarted zygote makes the first worker of its backend a
fork, is kept without workers while a model keeps it, and stops after the idle timeout once released."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate, ModelUpdate
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


# -- memory admission of a prestart ---------------------------------------------------------------------------------
MiB = 2**20


@pytest.fixture
def budgeted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """``pinned`` (forks) and ``resident`` (a plain spawn, ``zygote: false``, so its worker starts no zygote)."""
    pinned = ModelCreate(id="pinned", task="embeddings", backend=SLEEPY, source="-", pinned=True)
    resident = ModelCreate(
        id="resident", task="embeddings", backend=SLEEPY, source="-", options={"zygote": False, "load_seconds": 1}
    )
    with in_process_services(tmp_path, monkeypatch, pinned, resident) as services:
        yield services


def tight_budget(services: Services) -> int:
    """A RAM budget that holds the zygote ``pinned`` would start and half of the running ``resident`` worker (at its
    peak): the zygote fits only without that worker."""
    coordinator = services.coordinator
    [handle] = [h for h in coordinator._handles.values() if h.alive]
    worker = coordinator._ram_planned(handle)
    assert worker >= 20 * MiB
    zygote = coordinator.supervisor.zygotes.expected_bytes(SLEEPY)
    return coordinator.supervisor.zygotes.reserved_bytes() + zygote + worker // 2


def test_a_prestart_that_does_not_fit_beside_a_pinned_worker_is_skipped_and_the_model_loads_normally(
    budgeted: Services, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator = budgeted.coordinator
    budgeted.catalog.update("resident", ModelUpdate(pinned=True))
    pinned = budgeted.catalog.get_or_raise("pinned")

    async def main() -> None:
        await coordinator.start()
        try:
            await coordinator.infer(budgeted.catalog.get_or_raise("resident"), {"model": "resident", "input": ["a"]})
            budgeted.runtime.update({"memory_budget_bytes": tight_budget(budgeted)})
            with caplog.at_level(logging.INFO, logger="modelhost.coordinator.coordinator"):
                assert not await coordinator.prestart_zygote(pinned)
            assert coordinator.zygotes() == []  # not started: no overshoot
            assert [w["model"] for w in coordinator.workers()] == ["resident"]  # a pinned worker is never evicted
            skipped = [r.getMessage() for r in caplog.records if "not prestarting" in r.getMessage()]
            assert len(skipped) == 1, skipped
            assert "pinned model pinned" in skipped[0]
            assert "beside the pinned workers" in skipped[0]
            assert "when first used" in skipped[0]

            # the model then loads by its normal path (here with room for it), and keeps the zygote it starts
            budgeted.runtime.update({"memory_budget_bytes": None})
            await coordinator.infer(pinned, {"model": "pinned", "input": ["hello"]})
            assert {w["model"]: w["started_by"] for w in coordinator.workers()}["pinned"] == "spawn"
            assert await until(lambda: [z["state"] for z in coordinator.zygotes()] == ["READY"])
            assert coordinator.zygotes()[0]["kept_for"] == ["pinned"]
        finally:
            await coordinator.stop()

    asyncio.run(main())


def test_a_prestart_evicts_an_idle_unpinned_worker_to_fit(budgeted: Services) -> None:
    coordinator = budgeted.coordinator
    pinned = budgeted.catalog.get_or_raise("pinned")

    async def main() -> None:
        await coordinator.start()
        try:
            await coordinator.infer(budgeted.catalog.get_or_raise("resident"), {"model": "resident", "input": ["a"]})
            budgeted.runtime.update({"memory_budget_bytes": tight_budget(budgeted)})
            assert await coordinator.prestart_zygote(pinned)
            assert coordinator.workers() == []  # the idle unpinned worker made room
            assert [z["kept_for"] for z in coordinator.zygotes()] == [["pinned"]]
            evicted = budgeted.metrics.registry.get_sample_value(
                "modelhost_worker_evictions_total", {"model": "resident", "reason": "evicted"}
            )
            assert evicted == 1.0
        finally:
            await coordinator.stop()

    asyncio.run(main())


def test_a_prestart_waits_for_the_load_in_progress(budgeted: Services) -> None:
    """Prestarts are serialized with loads: one that comes while a load runs waits for it, then plans with its
    worker counted."""
    coordinator = budgeted.coordinator
    pinned = budgeted.catalog.get_or_raise("pinned")

    async def main() -> None:
        await coordinator.start()
        try:
            await coordinator.warm_up(budgeted.catalog.get_or_raise("resident"), wait=False)  # loads for 1 s
            prestart = asyncio.ensure_future(coordinator.prestart_zygote(pinned))
            await asyncio.sleep(0.3)
            assert not prestart.done()
            assert [load["model"] for load in coordinator.memory()["loads"]] == ["resident", "pinned (zygote)"]
            assert coordinator.zygotes() == []
            assert await prestart
            assert [w["state"] for w in coordinator.workers()] == ["READY"]  # the load was done first
            assert len(coordinator.zygotes()) == 1
        finally:
            await coordinator.stop()

    asyncio.run(main())


def test_a_zygote_larger_than_the_whole_budget_is_not_prestarted(budgeted: Services) -> None:
    """Nothing runs, and the zygote's expected size is over the budget: no process starts, nothing is evicted."""
    coordinator = budgeted.coordinator
    pinned = budgeted.catalog.get_or_raise("pinned")
    budgeted.runtime.update({"memory_budget_bytes": coordinator.supervisor.zygotes.expected_bytes(SLEEPY) - MiB})

    async def main() -> None:
        await coordinator.start()
        try:
            assert not await coordinator.prestart_zygote(pinned)
            assert coordinator.zygotes() == []
            assert coordinator.supervisor.zygotes.processes() == []
            assert coordinator.memory()["loads"] == []  # the turn it took is given back
        finally:
            await coordinator.stop()

    asyncio.run(main())
