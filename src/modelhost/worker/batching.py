"""Dynamic batching: requests that arrive while the model is busy are merged into one ``infer_batch`` call.

No fixed delay is added by default: a lone request runs at once, and everything that queued up behind a running
batch forms the next one (up to ``max_batch_size`` requests). ``batch_wait_ms`` > 0 additionally holds the first
request of a batch for that long to collect more.

Under load — when the last batch merged several requests — the next batch waits up to half the last batch's
duration (at most 5 ms) until as many requests are queued as that batch held: the requests just answered are on
their way back, and waiting for them keeps batches full instead of letting them shrink to whatever trickled in
during the last run. A lone request (last batch of one) never waits.

A batch of one runs on the event loop's own thread when ``inline_when()`` says the inference thread is idle: a lone
request skips the hop to the inference thread and back (two thread wake-ups), and whatever arrives meanwhile waits
in the socket and forms the next batch, which runs on the inference thread while the loop reads more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from modelhost.errors import BadInput

log = logging.getLogger(__name__)

#: The longest a batch waits for more requests under load (when ``batch_wait_ms`` is 0).
UNDER_LOAD_WAIT_S = 0.005

BatchFn = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class BatchStats:
    def __init__(self) -> None:
        self.batches = 0
        self.requests = 0
        self.max_size = 0
        self.sizes: dict[int, int] = {}

    def record(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.max_size = max(self.max_size, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "mean_size": round(self.requests / self.batches, 2) if self.batches else 0.0,
            "max_size": self.max_size,
            "size_histogram": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class Batcher:
    def __init__(
        self,
        infer_batch: BatchFn,
        executor: Executor,
        *,
        max_batch_size: int,
        wait_ms: float,
        inline_when: Callable[[], bool] | None = None,
    ) -> None:
        self._infer_batch = infer_batch
        self._executor = executor
        self._inline_when = inline_when
        self._max = max(1, max_batch_size)
        self._wait = max(0.0, wait_ms) / 1000.0
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = asyncio.Queue()
        self.stats = BatchStats()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="batcher")

    async def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.enqueue(payload)

    def enqueue(self, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Queue ``payload``; its result (or exception) arrives in the future. Cancelling the future takes the
        request out of a batch that has not started."""
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._queue.put_nowait((payload, future))  # unbounded: put() would only add a coroutine
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_size, last_seconds = 1, 0.0
        while True:
            batch = [await self._queue.get()]
            wait = self._wait
            if not wait and last_size > 1:
                # Under load (the last batch merged several requests), the requests that were in it are on their
                # way back: wait up to half the last batch's time (at most UNDER_LOAD_WAIT_S) for the queue to
                # reach that size again, so batches stay full. A lone request never waits.
                wait = min(UNDER_LOAD_WAIT_S, last_seconds / 2)
            if wait:
                target = self._max if self._wait else min(self._max, last_size)
                deadline = time.monotonic() + wait
                while len(batch) + self._queue.qsize() < target and (remaining := deadline - time.monotonic()) > 0:
                    try:  # asyncio.timeout, not wait_for: no task per wait (Python 3.11)
                        async with asyncio.timeout(remaining):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(payload, fut) for payload, fut in batch if not fut.cancelled()]
            if not batch:
                continue
            self.stats.record(len(batch))
            payloads = [payload for payload, _ in batch]
            last_size, started = len(batch), time.perf_counter()
            try:
                if len(batch) == 1 and self._inline_when is not None and self._inline_when():
                    results = self._infer_batch(payloads)
                else:
                    results = await loop.run_in_executor(self._executor, self._infer_batch, payloads)
            except Exception as exc:
                if len(batch) == 1:
                    self._fail(batch[0][1], exc)
                    continue
                # One bad request must not fail its neighbours: run them one by one to isolate it.
                for payload, fut in batch:
                    try:
                        (result,) = await loop.run_in_executor(self._executor, self._infer_batch, [payload])
                    except Exception as exc:
                        self._fail(fut, exc)
                    else:
                        if not fut.done():
                            fut.set_result(result)
                continue
            last_seconds = time.perf_counter() - started
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    @staticmethod
    def _fail(fut: asyncio.Future[dict[str, Any]], exc: Exception) -> None:
        if not isinstance(exc, BadInput):
            log.error("batch inference failed", exc_info=exc)
        if not fut.done():
            fut.set_exception(exc)
