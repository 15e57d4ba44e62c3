"""The coordinator with real worker processes: streaming, cancellation on disconnect, binary uploads."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate
from modelhost.errors import InvalidRequest, WorkerFailed
from tests.support.services import in_process_services, run_with_coordinator

STREAM = ModelCreate(id="counter", task="text-generation", backend="tests.support.backends:CountingStream", source="-")


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with in_process_services(tmp_path, monkeypatch, STREAM) as services:
        yield services


run = run_with_coordinator


def test_stream_runs_to_the_end(services: Services, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def main() -> list[dict[str, Any]]:
        model = services.catalog.get_or_raise("counter")
        return [c async for c in services.coordinator.infer_stream(model, {"marker": str(marker), "count": 5})]

    chunks = run(services, main)
    assert chunks == [{"i": i} for i in range(5)]
    assert marker.read_text() == "5 finished"


def test_closing_the_stream_stops_generation_in_the_worker(services: Services, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def main() -> list[dict[str, Any]]:
        model = services.catalog.get_or_raise("counter")
        stream = services.coordinator.infer_stream(model, {"marker": str(marker), "count": 1000, "interval": 0.02})
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # what a route does when its HTTP client disconnects
        for _ in range(100):
            if "cancelled" in marker.read_text():
                break
            await asyncio.sleep(0.05)
        return got

    assert run(services, main) == [{"i": 0}, {"i": 1}, {"i": 2}]
    produced, state = marker.read_text().split()
    assert state == "cancelled"
    assert int(produced) < 50  # stopped within a few chunks, far from the 1000 asked for


def test_uploads_reach_the_worker_as_spooled_files_and_are_deleted(services: Services) -> None:
    """A file object (what a route has) is copied to a private file the worker opens; a binary value in the result
    comes back as bytes. The spooled copy is gone after the call."""
    blob = bytes(range(256)) * 4096  # 1 MiB with every byte value

    async def main() -> dict[str, Any]:
        model = services.catalog.get_or_raise("counter")
        assert oct(services.coordinator.upload_dir.stat().st_mode & 0o777) == "0o700"
        return await services.coordinator.infer(
            model, {"hello": "world", "echo_bytes": 700_000}, files={"file": io.BytesIO(blob)}
        )

    result = run(services, main)
    assert result["sizes"] == {"file": len(blob)}
    assert result["sha256"] == {"file": hashlib.sha256(blob).hexdigest()}
    assert result["echo"] == {"file": blob[:700_000]}  # bytes, not base64
    spooled = Path(result["paths"]["file"])
    assert spooled.parent == services.coordinator.upload_dir
    assert not spooled.exists()
    assert not spooled.parent.exists()  # the coordinator's folder goes when it stops
    assert oct(spooled.parent.parent.stat().st_mode & 0o777) == "0o700"


def test_a_path_is_handed_over_as_is(services: Services, tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(b"x" * 1000)

    async def main() -> dict[str, Any]:
        model = services.catalog.get_or_raise("counter")
        return await services.coordinator.infer(model, {}, files={"file": source})

    result = run(services, main)
    assert result["paths"] == {"file": str(source)}
    assert source.exists()  # the caller's file is the caller's


def test_binary_stream_chunks_have_no_line_limit(services: Services, tmp_path: Path) -> None:
    """Chunks of 3 MiB (aiohttp's NDJSON line limit was 512 KiB) arrive whole, as bytes."""

    async def main() -> list[Any]:
        model = services.catalog.get_or_raise("counter")
        payload = {"marker": str(tmp_path / "m"), "count": 3, "chunk_bytes": 3 * 2**20, "interval": 0}
        return [c async for c in services.coordinator.infer_stream(model, payload)]

    chunks = run(services, main)
    assert [len(c) for c in chunks] == [3 * 2**20] * 3
    assert [c[:1] for c in chunks] == [b"\x00", b"\x01", b"\x02"]


def test_a_failure_after_the_first_chunk_raises_and_leaks_nothing(services: Services, tmp_path: Path) -> None:
    async def main() -> tuple[list[Any], Exception]:
        model = services.catalog.get_or_raise("counter")
        payload = {"marker": str(tmp_path / "m"), "count": 5, "fail_after": 2, "interval": 0}
        got: list[Any] = []
        try:
            async for chunk in services.coordinator.infer_stream(model, payload):
                got.append(chunk)
        except Exception as exc:  # noqa: BLE001 - checked below
            return got, exc
        raise AssertionError("the stream ended as if complete")

    got, error = run(services, main)
    assert got == [{"i": 0}, {"i": 1}]
    assert isinstance(error, WorkerFailed)
    assert "RuntimeError" in error.message
    assert "0x" not in error.message  # the exception's text (with an object repr) stays in the worker log


def test_a_lone_surrogate_is_a_400(services: Services) -> None:
    async def main() -> None:
        model = services.catalog.get_or_raise("counter")
        await services.coordinator.infer(model, {"text": "\ud800"})

    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        run(services, main)


def test_non_streaming_backend_refuses_stream(services: Services) -> None:
    services.catalog.create(
        ModelCreate(id="plain", task="embeddings", backend="tests.support.backends:SleepyEmbeddings", source="-")
    )

    async def main() -> None:
        model = services.catalog.get_or_raise("plain")
        async for _ in services.coordinator.infer_stream(model, {"input": ["x"]}):
            pass

    with pytest.raises(InvalidRequest, match="does not stream"):
        run(services, main)


def test_bytes_are_spooled_too(services: Services) -> None:
    async def main() -> dict[str, Any]:
        model = services.catalog.get_or_raise("counter")
        return await services.coordinator.infer(model, {}, files={"file": b"abc" * 1000})

    result = run(services, main)
    assert result["sizes"] == {"file": 3000}
    assert not Path(result["paths"]["file"]).exists()
