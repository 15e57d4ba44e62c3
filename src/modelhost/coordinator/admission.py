"""Admission: the one component that decides when GPU work may run and whether a model's worker may load.

GPU serialization (runtime setting ``gpu_policy``):

* ``exclusive``: a single lock held across a GPU worker's spawn+load and across each of its inferences, so no two
  GPU-heavy operations overlap. CPU workers never take it. The lock is fair *and* sticky: while requests for several
  models wait, the model that holds the GPU keeps it for up to ``gpu_fair_grants`` consecutive grants or until the
  oldest request for another model has waited ``gpu_fair_seconds`` (runtime settings, read at each grant) — so a
  loaded model's queue is served before a swap, and nothing starves. Each hand-over to another model counts in
  ``modelhost_gpu_swaps_total``.
* ``memory``: no lock around inferences; GPU models run side by side while they fit the GPU budget.
* ``none``: no serialization.

Memory (every policy): loads are one at a time (``loading``); before a worker loads, ``plan_room`` checks that its
expected peak fits the budgets (system RAM: workers + zygotes; each GPU: its workers), choosing idle workers to evict
least-recently-used first. Live workers count at their peak (the larger of their RSS now, their own high-water mark
and their model's last measured peak), so two workers that fit at rest do not overshoot when both run; zygotes count
as fixed memory, a zygote still importing (or about to be started by this load) at its expected size. Pinned workers
and workers with requests in flight or pending are never chosen (pending requests that are merely held back — waiting
for the GPU lock or for a waiting load's turn — do not protect a worker). When nothing more can be evicted the load
waits; after ``gpu_fair_seconds`` the workers it needs gone are *drained* (their new requests are held back until the
load got its room) so a busy model cannot starve it. What admission cannot foresee (a worker growing past its known
peak) the coordinator's watchdog catches: see ``over_budget``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from modelhost.catalog.schemas import ModelEntry
from modelhost.metrics import Metrics

#: Defaults of the runtime settings ``gpu_fair_grants`` and ``gpu_fair_seconds`` (consecutive GPU-lock grants to the
#: model holding the GPU while others wait; longest another model's request waits, and when a waiting load drains).
FAIR_GRANTS = 16
FAIR_SECONDS = 2.0
#: Default budgets: this fraction of MemTotal, and of each GPU's total memory.
RAM_DEFAULT_FRACTION = 0.8
GPU_DEFAULT_FRACTION = 0.9


# -- the GPU lock -------------------------------------------------------------------------------------------------
@dataclass
class _Waiter:
    model_id: str
    since: float
    future: asyncio.Future[None]


class FairGpuLock:
    """A lock that prefers the model holding it (bounded by ``max_grants`` / ``max_wait``), else first come."""

    def __init__(
        self, on_swap: Callable[[], None] | None = None, max_grants: int = FAIR_GRANTS, max_wait: float = FAIR_SECONDS
    ) -> None:
        self._waiters: list[_Waiter] = []
        self._locked = False
        self.holder: str | None = None
        self.last: str | None = None  # the model that held it last (the one "on" the GPU)
        self.streak = 0
        self.max_grants = max_grants
        self.max_wait = max_wait
        self._on_swap = on_swap

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, model_id: str) -> None:
        if not self._locked and not self._waiters:
            self._grant(model_id)
            return
        waiter = _Waiter(model_id, time.monotonic(), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release()  # granted while being cancelled: pass it on
            raise

    def release(self) -> None:
        self._locked = False
        self.holder = None
        while self._waiters:
            waiter = self._waiters.pop(pick_next(self._waiters, self.last, self.streak, self.max_grants, self.max_wait))
            if waiter.future.done():
                continue
            self._grant(waiter.model_id)
            waiter.future.set_result(None)
            return

    def _grant(self, model_id: str) -> None:
        self._locked = True
        self.holder = model_id
        if model_id == self.last:
            self.streak += 1
        else:
            if self.last is not None and self._on_swap is not None:
                self._on_swap()
            self.last, self.streak = model_id, 1


def pick_next(
    waiters: list[_Waiter], last: str | None, streak: int, max_grants: int, max_wait: float, now: float | None = None
) -> int:
    """Index of the waiter to grant next: the earliest request for ``last`` (the model on the GPU) while its streak
    is under ``max_grants`` and no request for another model has waited ``max_wait``; else the earliest."""
    now = time.monotonic() if now is None else now
    others = [w.since for w in waiters if w.model_id != last]
    starving = bool(others) and now - min(others) >= max_wait
    if last is not None and streak < max_grants and not starving:
        for i, waiter in enumerate(waiters):
            if waiter.model_id == last:
                return i
    return 0


# -- memory plans (pure) ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Occupant:
    """A live worker as the memory plan sees it."""

    key: str
    bytes: int
    last_used: float
    pinned: bool = False
    evictable: bool = False  # idle: READY, nothing in flight, nothing pending but held back


Verdict = Literal["fits", "wait", "never", "pinned"]


@dataclass
class Plan:
    verdict: Verdict
    victims: list[str] = field(default_factory=list)  # evict these (LRU first), then it fits
    drain: list[str] = field(default_factory=list)  # for "wait": the workers whose going would make it fit
    free: int = 0  # bytes free now (budget minus what is used)


def worker_ram(rss: int, high_water: int, known_peak: int, reserved: int = 0) -> int:
    """What a live worker counts for in a plan: its peak, not its use at rest — the largest of its RSS now, its own
    high-water mark, its model's last measured peak and (while it starts) what its load reserved."""
    return max(rss, high_water, known_peak, reserved)


def zygote_ram(rss: int | None, listening: bool, expected: int) -> int:
    """What a zygote counts for in a plan (fixed: no eviction frees it). Listening, its imports are done: its RSS.
    Still importing (or not yet readable): the larger of its RSS and its expected size, so the libraries it is
    loading are reserved before they are resident."""
    if listening and rss:
        return rss
    return max(rss or 0, expected)


def plan_room(need: int, budget: int, fixed: int, occupants: Iterable[Occupant]) -> Plan:
    """Can a load needing ``need`` bytes run, given ``budget``, ``fixed`` bytes no eviction frees (zygotes) and the
    live workers? ``never``: not even alone; ``pinned``: not beside the pinned workers; ``fits`` after evicting
    ``victims``; else ``wait`` (``drain``: the least-recently-used unpinned workers that would make room)."""
    occupants = list(occupants)
    used = fixed + sum(o.bytes for o in occupants)
    free = budget - used
    if need > budget - fixed:
        return Plan("never", free=free)
    if need > budget - fixed - sum(o.bytes for o in occupants if o.pinned):
        return Plan("pinned", free=free)
    if need <= free:
        return Plan("fits", free=free)
    by_age = sorted((o for o in occupants if not o.pinned), key=lambda o: o.last_used)
    victims: list[str] = []
    room = free
    for occupant in by_age:
        if occupant.evictable:
            victims.append(occupant.key)
            room += occupant.bytes
            if need <= room:
                return Plan("fits", victims=victims, free=free)
    drain: list[str] = []
    room = free
    for occupant in by_age:
        drain.append(occupant.key)
        room += occupant.bytes
        if need <= room:
            break
    return Plan("wait", drain=drain, free=free)


def combine(plans: Iterable[Plan]) -> Plan:
    """One plan for several budgets (RAM and a GPU): the worst verdict; victims and drains together."""
    plans = list(plans)
    order: tuple[Verdict, ...] = ("never", "pinned", "wait", "fits")
    verdict: Verdict = min((p.verdict for p in plans), key=order.index, default="fits")
    merged = Plan(verdict, free=min((p.free for p in plans), default=0))
    for p in plans:
        merged.victims += [v for v in p.victims if v not in merged.victims]
        merged.drain += [d for d in p.drain if d not in merged.drain]
    return merged


def mem_total_bytes() -> int | None:
    """MemTotal from /proc/meminfo (Linux); None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- the admission component --------------------------------------------------------------------------------------
class GpuAdmission:
    """GPU lock, load serialization and the memory-wait bookkeeping of one coordinator."""

    def __init__(self, metrics: Metrics, fairness: Callable[[], tuple[int, float]] | None = None) -> None:
        self._metrics = metrics
        self._lock = FairGpuLock(on_swap=metrics.gpu_swaps.inc)
        #: ``(gpu_fair_grants, gpu_fair_seconds)`` now: read at every acquire and release, so a change applies at once
        self.fairness: Callable[[], tuple[int, float]] = fairness or (lambda: (FAIR_GRANTS, FAIR_SECONDS))
        self._load_lock = asyncio.Lock()
        self.loading_queue: list[tuple[str, float]] = []  # (model, since): first is loading or waiting for room
        self.draining: set[str] = set()  # models whose new requests are held back for a waiting load
        self.room_wait: dict[str, object] | None = None  # the load waiting for memory, for /api/health
        self.gpu_totals: dict[str, int] = {}  # device -> total bytes, as its workers report

    @property
    def held(self) -> bool:
        return self._lock.locked

    @property
    def holder(self) -> str | None:
        return self._lock.holder

    @property
    def waiters(self) -> int:
        return self._lock.waiting

    @asynccontextmanager
    async def admit(self, model: ModelEntry, policy: str) -> AsyncIterator[None]:
        locked = await self.enter(model, policy)
        try:
            yield
        finally:
            if locked:
                self.leave()

    async def enter(self, model: ModelEntry, policy: str) -> bool:
        """``admit`` without the context manager (the request path): True when the GPU lock was taken, and
        ``leave()`` must then be called once."""
        if policy != "exclusive" or not model.uses_gpu:
            return False
        started = time.monotonic()
        self._lock.max_grants, self._lock.max_wait = self.fairness()
        await self._lock.acquire(model.id)
        self._metrics.gpu_lock_wait_seconds.observe(time.monotonic() - started)
        return True

    def leave(self) -> None:
        self._lock.max_grants, self._lock.max_wait = self.fairness()
        self._lock.release()

    @asynccontextmanager
    async def loading(self, model_id: str) -> AsyncIterator[None]:
        """Loads one at a time, in arrival order (positions visible through ``loading_queue``)."""
        entry = (model_id, time.monotonic())
        self.loading_queue.append(entry)
        try:
            async with self._load_lock:
                yield
        finally:
            self.loading_queue.remove(entry)

    async def until_not_draining(self, model_id: str) -> None:
        while model_id in self.draining:
            await asyncio.sleep(0.05)

    def ram_budget(self, setting: int | None) -> int | None:
        if setting:
            return setting
        total = mem_total_bytes()
        return int(total * RAM_DEFAULT_FRACTION) if total else None

    def gpu_budget(self, device: str, setting: int | None) -> int | None:
        if setting:
            return setting
        total = self.gpu_totals.get(device)
        return int(total * GPU_DEFAULT_FRACTION) if total else None
