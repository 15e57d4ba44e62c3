"""Admission decisions as pure logic: which idle workers a load evicts (LRU, never pinned or busy), when it waits or
fails fast, and the GPU lock's bounded preference for the model already on the GPU (real end-to-end behaviour:
tests/e2e/test_memory_admission.py)."""

from __future__ import annotations

import asyncio

from modelhost.catalog.schemas import ModelEntry
from modelhost.coordinator.admission import (
    FairGpuLock,
    GpuAdmission,
    Occupant,
    Plan,
    _Waiter,
    combine,
    pick_next,
    plan_room,
    worker_ram,
    zygote_ram,
)
from modelhost.coordinator.footprint import BACKEND_BASE_MB, zygote_estimate_bytes
from modelhost.metrics import Metrics

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


def test_a_starting_zygote_is_reserved_at_its_expected_size_until_it_listens() -> None:
    expected = 450 * MB
    assert zygote_ram(None, listening=False, expected=expected) == expected  # just started: nothing readable yet
    assert zygote_ram(40 * MB, listening=False, expected=expected) == expected  # importing: the imports reserved
    assert zygote_ram(600 * MB, listening=False, expected=expected) == 600 * MB  # larger than expected: its RSS
    assert zygote_ram(300 * MB, listening=True, expected=expected) == 300 * MB  # imports done: what it really holds
    # a 300 MB load beside an idle 300 MB worker in 1000 MB, while a zygote imports (40 MB resident so far): counted
    # at its RSS it "fits" and overshoots once torch is in; reserved, the load evicts the idle worker first
    idle = [occ("a", 300, 1)]
    assert plan_room(300 * MB, 1000 * MB, 40 * MB, idle) == Plan("fits", free=660 * MB)
    reserved = plan_room(300 * MB, 1000 * MB, zygote_ram(40 * MB, False, expected), idle)
    assert reserved.verdict == "fits"
    assert reserved.victims == ["a"]
    # beside a busy worker the same load waits for it instead
    assert plan_room(300 * MB, 1000 * MB, zygote_ram(40 * MB, False, expected), [occ("a", 300, 1, idle=False)]) == (
        Plan("wait", drain=["a"], free=250 * MB)
    )
    # a load whose own zygote would not fit beside it even alone: "never" with the zygote, "fits" without it
    assert plan_room(700 * MB, 1000 * MB, expected, []).verdict == "never"
    assert plan_room(700 * MB, 1000 * MB, 0, []).verdict == "fits"


def test_zygote_estimate_is_the_backend_base_by_name_or_reference() -> None:
    base = BACKEND_BASE_MB["sentence-transformers"] * MB
    assert zygote_estimate_bytes("sentence-transformers") == base
    reference = "modelhost.backends.text.embeddings_sentence_transformers:SentenceTransformersEmbeddings"
    assert zygote_estimate_bytes(reference) == base
    assert zygote_estimate_bytes("modelhost.backends.text.embeddings_onnx:OnnxEmbeddings") == 150 * MB
    assert zygote_estimate_bytes("somepkg.mod:Custom") == 300 * MB  # DEFAULT_BASE_MB


def test_live_workers_count_at_their_peaks() -> None:
    # at rest after a long request: 200 MB resident, 350 MB high-water mark in this life, 500 MB measured last life
    assert worker_ram(200 * MB, 350 * MB, 500 * MB) == 500 * MB
    assert worker_ram(200 * MB, 350 * MB, 0) == 350 * MB  # never measured: its own high-water mark
    assert worker_ram(600 * MB, 600 * MB, 500 * MB) == 600 * MB  # grown past the known peak: now
    assert worker_ram(50 * MB, 50 * MB, 0, reserved=400 * MB) == 400 * MB  # starting: its reservation
    # two workers at 250 MB at rest, 450 MB at their peaks; 1000 MB; a third model needs 300 MB
    rest = [occ("a", 250, 1), occ("b", 250, 2)]
    assert plan_room(300 * MB, 1000 * MB, 0, rest).victims == []  # counted at rest: "fits" — then overshoots
    peaks = [occ("a", worker_ram(250 * MB, 260 * MB, 450 * MB) // MB, 1), occ("b", 450, 2)]
    plan = plan_room(300 * MB, 1000 * MB, 0, peaks)
    assert plan.verdict == "fits"
    assert plan.victims == ["a"]  # room for its peak: the least recently used goes
    busy = [occ("a", 450, 1, idle=False), occ("b", 450, 2, idle=False)]
    assert plan_room(300 * MB, 1000 * MB, 0, busy).verdict == "wait"


def test_gpu_fairness_is_read_at_every_grant() -> None:
    gpu = ModelEntry(id="x", task="embeddings", backend="onnx", source="-", device="cuda")

    async def run() -> list[str]:
        limits = [(16, 60.0)]
        admission = GpuAdmission(Metrics(), fairness=lambda: limits[0])
        order: list[str] = []

        async def use(model: str) -> None:
            await admission.enter(gpu.model_copy(update={"id": model}), "exclusive")
            order.append(model)
            await asyncio.sleep(0)
            admission.leave()

        await admission.enter(gpu.model_copy(update={"id": "a"}), "exclusive")
        tasks = [asyncio.ensure_future(use(m)) for m in ("b", "a", "a", "a")]
        await asyncio.sleep(0)
        limits[0] = (1, 60.0)  # gpu_fair_grants lowered at run time: "a" may not keep the GPU
        admission.leave()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == ["b", "a", "a", "a"]  # with 16 grants it would have been a, a, a, b


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
