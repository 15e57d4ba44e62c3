"""Admission decisions as pure logic: which idle workers a load evicts (LRU, never pinned or busy), when it waits or
fails fast, and the GPU lock's bounded preference for the model already on the GPU (real end-to-end behaviour:
tests/e2e/test_memory_admission.py)."""

from __future__ import annotations

import asyncio

from modelhost.coordinator.admission import FairGpuLock, Occupant, Plan, _Waiter, combine, pick_next, plan_room

MB = 2**20


def occ(key: str, size: int, last_used: float, *, pinned: bool = False, idle: bool = True) -> Occupant:
    return Occupant(key, size * MB, last_used, pinned=pinned, evictable=idle and not pinned)


def test_fits_without_eviction() -> None:
    plan = plan_room(100 * MB, 1000 * MB, 200 * MB, [occ("a", 300, 1)])
    assert plan == Plan("fits", free=500 * MB)


def test_evicts_least_recently_used_idle_workers_first_and_only_as_many_as_needed() -> None:
    workers = [occ("new", 300, 9), occ("old", 300, 1), occ("mid", 300, 5)]
    plan = plan_room(600 * MB, 1000 * MB, 0, workers)  # 100 MB free: two 300 MB workers must go
    assert plan.verdict == "fits"
    assert plan.victims == ["old", "mid"]
    assert plan_room(250 * MB, 1000 * MB, 0, workers).victims == ["old"]


def test_never_evicts_busy_or_pinned_workers() -> None:
    workers = [occ("pinned", 300, 0, pinned=True), occ("busy", 300, 1, idle=False), occ("idle", 300, 2)]
    plan = plan_room(350 * MB, 1000 * MB, 0, workers)
    assert plan.victims == ["idle"]
    waiting = plan_room(500 * MB, 1000 * MB, 0, workers)
    assert waiting.verdict == "wait"
    assert waiting.victims == []
    assert waiting.drain == ["busy", "idle"]  # LRU unpinned workers whose going makes room; never the pinned one


def test_fails_fast_when_it_can_never_fit() -> None:
    assert plan_room(900 * MB, 1000 * MB, 200 * MB, []).verdict == "never"  # not even alone beside the zygotes
    assert plan_room(600 * MB, 1000 * MB, 0, [occ("p", 500, 0, pinned=True)]).verdict == "pinned"
    assert plan_room(500 * MB, 1000 * MB, 0, [occ("p", 500, 0, pinned=True)]).verdict == "fits"


def test_combined_budgets_take_the_worst_verdict_and_all_victims() -> None:
    ram = Plan("fits", victims=["a"])
    gpu = Plan("fits", victims=["b", "a"])
    assert combine([ram, gpu]).victims == ["a", "b"]
    assert combine([ram, Plan("wait", drain=["c"])]).verdict == "wait"
    assert combine([Plan("wait"), Plan("never")]).verdict == "never"
    assert combine([]).verdict == "fits"


def waiters(*items: tuple[str, float]) -> list[_Waiter]:
    return [_Waiter(model, since, None) for model, since in items]  # type: ignore[arg-type]


def test_gpu_lock_prefers_the_loaded_model_within_bounds() -> None:
    queue = waiters(("b", 10.0), ("a", 10.5), ("a", 10.6))
    assert pick_next(queue, last="a", streak=3, max_grants=16, max_wait=2.0, now=11.0) == 1  # a's queue first
    assert pick_next(queue, last="a", streak=16, max_grants=16, max_wait=2.0, now=11.0) == 0  # streak used up
    assert pick_next(queue, last="a", streak=3, max_grants=16, max_wait=2.0, now=12.5) == 0  # b waited too long
    assert pick_next(queue, last="c", streak=1, max_grants=16, max_wait=2.0, now=11.0) == 0  # first come otherwise


def test_fair_gpu_lock_serves_the_holder_queue_then_swaps_and_counts_it() -> None:
    async def run() -> tuple[list[str], int]:
        swaps: list[int] = []
        lock = FairGpuLock(on_swap=lambda: swaps.append(1), max_grants=3, max_wait=60)
        order: list[str] = []

        async def use(model: str) -> None:
            await lock.acquire(model)
            order.append(model)
            await asyncio.sleep(0)
            lock.release()

        await lock.acquire("a")  # "a" is on the GPU; then b and more a's queue up
        tasks = [asyncio.ensure_future(use(m)) for m in ("b", "a", "a", "a", "a", "b")]
        await asyncio.sleep(0)
        lock.release()
        await asyncio.gather(*tasks)
        return order, len(swaps)

    order, swaps = asyncio.run(run())
    assert order == ["a", "a", "b", "b", "a", "a"]  # 3 grants to a in a row at most, then b's queue, then a again
    assert swaps == 2


def test_fair_gpu_lock_survives_a_cancelled_waiter() -> None:
    async def run() -> bool:
        lock = FairGpuLock()
        await lock.acquire("a")
        waiter = asyncio.ensure_future(lock.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        lock.release()
        await asyncio.wait_for(lock.acquire("c"), 1)
        return lock.locked and lock.holder == "c"

    assert asyncio.run(run())
