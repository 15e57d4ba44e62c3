"""GPU admission: the one component that serializes GPU-heavy work.

``exclusive``: a single lock held across a GPU worker's spawn+load and across each of its inferences, so no two
GPU-heavy operations overlap. CPU workers never take it. ``none``: no serialization.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from modelhost.catalog.models import ModelEntry
from modelhost.metrics import Metrics


class GpuAdmission:
    def __init__(self, metrics: Metrics) -> None:
        self._lock = asyncio.Lock()
        self._metrics = metrics
        self.waiters = 0
        self.holder: str | None = None

    @property
    def held(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def admit(self, model: ModelEntry, policy: str) -> AsyncIterator[None]:
        if policy == "none" or not model.uses_gpu:
            yield
            return
        started = time.monotonic()
        self.waiters += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiters -= 1
        self._metrics.gpu_lock_wait_seconds.observe(time.monotonic() - started)
        self.holder = model.id
        try:
            yield
        finally:
            self.holder = None
            self._lock.release()
