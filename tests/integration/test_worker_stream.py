"""The worker's inference stream with real worker processes: requests multiplexed over one long-lived connection,
answers matched to their requests, and a connection without the worker's token refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate
from modelhost.coordinator.client import WorkerClient, WorkerProtocolError
from modelhost.worker import frames
from tests.support.services import in_process_services, run_with_coordinator

SLEEPY = ModelCreate(id="sleepy", task="embeddings", backend="tests.support.backends:SleepyEmbeddings", source="-")


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with in_process_services(tmp_path, monkeypatch, SLEEPY) as services:
        yield services


run = run_with_coordinator


def test_concurrent_requests_share_one_connection_and_get_their_own_answers(services: Services) -> None:
    texts = [f"sentence number {i}" for i in range(40)]

    async def main() -> tuple[list[bytes], list[bytes], dict[str, Any]]:
        model = services.catalog.get_or_raise("sleepy")
        coordinator = services.coordinator
        alone = [(await coordinator.infer(model, {"model": "sleepy", "input": t}))["embeddings"] for t in texts[:3]]
        # The first of these holds the inference thread for a moment, so the others queue up behind it together.
        calls = [coordinator.infer(model, {"model": "sleepy", "input": ["sleep:0.3", t]}) for t in texts[:1]]
        calls += [coordinator.infer(model, {"model": "sleepy", "input": t}) for t in texts]
        together = await asyncio.gather(*calls)
        info = await coordinator._handles["sleepy"].client.info()  # type: ignore[union-attr]
        return alone, [r["embeddings"] for r in together[1:]], info

    alone, together, info = run(services, main)
    assert together[:3] == alone  # each answer went to its own request
    assert len(set(together)) == len(texts)
    batching = info["batching"]
    assert batching["requests"] == 3 + 1 + len(texts)
    assert batching["max_size"] > 1  # requests were in flight at the same time on the one connection


def test_a_connection_without_the_token_is_closed(services: Services) -> None:
    async def main() -> tuple[str, str]:
        model = services.catalog.get_or_raise("sleepy")
        await services.coordinator.infer(model, {"model": "sleepy", "input": "warm"})
        socket_path = services.coordinator._handles["sleepy"].socket_path
        assert socket_path is not None
        outcomes = []
        for token in ("guess", ""):
            intruder = WorkerClient(socket_path, token)
            try:
                await intruder.infer({"model": "sleepy", "input": "x"}, request_id="r", idle_timeout=60)
            except WorkerProtocolError as exc:
                outcomes.append(str(exc))
            finally:
                await intruder.close()
        return outcomes[0], oct(Path(frames.stream_socket_path(socket_path)).stat().st_mode & 0o777)

    refused, mode = run(services, main)
    assert "broke off" in refused
    assert mode == "0o600"


def test_the_worker_handle_adopts_the_entry_with_the_recorded_memory(services: Services) -> None:
    """After a load the catalog records the worker's memory in a new entry: not a change of the model. The next
    request's entry becomes the handle's (the same worker goes on, no respawn queued)."""

    async def main() -> tuple[bool, bool, bool, bool]:
        model = services.catalog.get_or_raise("sleepy")
        coordinator = services.coordinator
        await coordinator.infer(model, {"model": "sleepy", "input": "load"})
        handle = coordinator._handles["sleepy"]
        pid = handle.pid
        for _ in range(200):  # recorded from a thread after the load
            if services.catalog.get_or_raise("sleepy").memory_measured_mb is not None:
                break
            await asyncio.sleep(0.02)
        recorded = services.catalog.get_or_raise("sleepy")
        await coordinator.infer(recorded, {"model": "sleepy", "input": "after"})
        return recorded is not model, handle.model is recorded, handle.next_model is None, handle.pid == pid

    new_entry, adopted, nothing_queued, same_worker = run(services, main)
    assert new_entry
    assert adopted
    assert nothing_queued
    assert same_worker


def test_deadlines_on_one_connection_expire_each_call_on_time(services: Services) -> None:
    """The connection keeps its calls' deadlines with one timer: a later call with an earlier deadline brings it
    forward, a call past its deadline raises TimeoutError while the others on the connection go on."""

    async def main() -> dict[str, Any]:
        model = services.catalog.get_or_raise("sleepy")
        await services.coordinator.infer(model, {"model": "sleepy", "input": "warm"})
        client = services.coordinator._handles["sleepy"].client
        assert client is not None
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def call(text: str, timeout: float) -> tuple[str, float]:
            try:
                status, _ = await client.infer(
                    {"model": "sleepy", "input": text}, request_id=text, idle_timeout=60, timeout=timeout
                )
                outcome = str(status)
            except TimeoutError:
                outcome = "timeout"
            return outcome, loop.time() - started

        slow = asyncio.ensure_future(call("sleep:0.8", 10))  # the timer is set for 10 s from now
        await asyncio.sleep(0.05)
        behind = await call("queued behind", 0.3)  # its deadline comes first: the timer is brought forward
        slow_outcome = await slow
        later = await call("sleep:0.6", 0.2)  # the timer still waits for the first call's 10 s: brought forward
        fine = await call("fine", 5)
        return {"behind": behind, "slow": slow_outcome, "later": later, "fine": fine[0]}

    outcomes = run(services, main)
    assert outcomes["behind"][0] == "timeout"
    assert 0.3 <= outcomes["behind"][1] < 0.75
    assert outcomes["slow"][0] == "200"  # the call beside it went on
    assert outcomes["later"][0] == "timeout"
    assert 0.2 <= outcomes["later"][1] - outcomes["slow"][1] < 0.55
    assert outcomes["fine"] == "200"


def test_frames_are_cut_the_same_whatever_the_chunking() -> None:
    stream = b"".join(
        [
            frames.encode(frames.JSON, 7, b'{"a":1}'),
            frames.encode(frames.BYTES, 7, bytes(range(256)) * 3),
            frames.encode(frames.DONE, 7),
            frames.encode(frames.ERROR, 2**32 - 1, b"{}"),
        ]
    )
    whole = frames.FrameReader().feed(stream)
    reader = frames.FrameReader()
    bytewise = [frame for i in range(len(stream)) for frame in reader.feed(stream[i : i + 1])]
    assert bytewise == whole
    assert [(kind, rid, len(data)) for kind, rid, data in whole] == [
        (frames.JSON, 7, 7),
        (frames.BYTES, 7, 768),
        (frames.DONE, 7, 0),
        (frames.ERROR, 2**32 - 1, 2),
    ]
    assert not reader.partial
    assert reader.feed(stream[:3]) == []
    assert reader.partial  # a stream that ends here was cut inside a frame
    with pytest.raises(ValueError, match="unknown frame kind 99"):
        frames.FrameReader().feed(bytes([99]) + bytes(8))
