"""The coordinator with real worker processes: streaming, cancellation on disconnect, binary uploads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import Services, build_services
from modelhost.catalog.schemas import ModelCreate
from modelhost.config import Settings
from modelhost.errors import InvalidRequest
from modelhost.metrics import Metrics
from tests.support.server import REPO_ROOT

STREAM = ModelCreate(id="counter", task="text-generation", backend="tests.support.backends:CountingStream", source="-")


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    services = build_services(Settings(data_dir=tmp_path, allow_custom_backends=True), Metrics())
    services.catalog.create(STREAM)
    yield services
    services.engine.dispose()


def run(services: Services, coro: Any) -> Any:
    async def wrapper() -> Any:
        await services.coordinator.start()
        try:
            return await coro()
        finally:
            await services.coordinator.stop()

    return asyncio.run(wrapper())


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


def test_binary_files_travel_as_multipart(services: Services) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB with every byte value

    async def main() -> dict[str, Any]:
        model = services.catalog.get_or_raise("counter")
        return await services.coordinator.infer(
            model, {"hello": "world"}, files={"file": ("x.bin", blob, "application/octet-stream")}
        )

    result = run(services, main)
    assert result == {"sizes": {"file": len(blob)}, "payload": {"hello": "world"}}


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
