"""The worker's dynamic batcher, with a deterministic batch function (plumbing only)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelhost.errors import BadInput
from modelhost.worker.batching import Batcher


def doubling(calls: list[int], delay: float = 0.05) -> Any:
    def infer_batch(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(len(payloads))
        time.sleep(delay)
        if any(p["x"] < 0 for p in payloads):
            raise BadInput("negative")
        return [{"y": p["x"] * 2} for p in payloads]

    return infer_batch


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_queued_behind_a_running_batch_form_the_next_batch() -> None:
    calls: list[int] = []

    async def main() -> list[dict[str, Any]]:
        batcher = Batcher(doubling(calls), ThreadPoolExecutor(1), max_batch_size=64, wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit({"x": 0}))
        await asyncio.sleep(0.01)  # first batch is running now
        rest = [batcher.submit({"x": i}) for i in range(1, 11)]
        return [await first, *await asyncio.gather(*rest)]

    results = run(main())
    assert [r["y"] for r in results] == [i * 2 for i in range(11)]
    assert calls == [1, 10]


def test_max_batch_size_and_wait() -> None:
    calls: list[int] = []

    async def main() -> None:
        batcher = Batcher(doubling(calls, 0), ThreadPoolExecutor(1), max_batch_size=4, wait_ms=30)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"x": i}) for i in range(10)))

    run(main())
    assert calls == [4, 4, 2]


def test_a_bad_request_does_not_fail_its_batch_neighbours() -> None:
    calls: list[int] = []

    async def main() -> list[Any]:
        batcher = Batcher(doubling(calls), ThreadPoolExecutor(1), max_batch_size=64, wait_ms=20)
        batcher.start()
        return await asyncio.gather(*(batcher.submit({"x": x}) for x in (1, -1, 2)), return_exceptions=True)

    first, bad, last = run(main())
    assert first == {"y": 2}
    assert last == {"y": 4}
    assert isinstance(bad, BadInput)
    assert calls == [3, 1, 1, 1]


@pytest.mark.parametrize("size", [1, 3])
def test_stats(size: int) -> None:
    async def main() -> dict[str, Any]:
        batcher = Batcher(doubling([], 0), ThreadPoolExecutor(1), max_batch_size=size, wait_ms=10)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"x": i}) for i in range(3)))
        return batcher.stats.as_dict()

    stats = run(main())
    assert stats["requests"] == 3
    assert stats["max_size"] == size


def test_under_load_the_next_batch_waits_for_the_requests_on_their_way_back() -> None:
    """After a batch of 4, three requests arriving one after another (the batcher runs between them) form one batch:
    it waits (up to 5 ms) for the queue to refill rather than running a batch of 1 and then the rest."""
    calls: list[int] = []

    async def main() -> None:
        batcher = Batcher(doubling(calls), ThreadPoolExecutor(1), max_batch_size=64, wait_ms=0)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"x": i}) for i in range(4)))
        trickle = []
        for i in range(3):
            trickle.append(asyncio.ensure_future(batcher.submit({"x": i})))
            await asyncio.sleep(0)
        await asyncio.gather(*trickle)

    run(main())
    assert calls == [4, 3]
