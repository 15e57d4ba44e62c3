"""A full disk under a worker's own writes (its temporary folder: audio decoded or encoded through a file, a PDF
rendered to images): 507 ``storage_full`` naming the folder, passed through by the coordinator — not a 500, not a
crash, not retried — and the same worker serves the next request once there is room again."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate
from modelhost.config import Settings
from modelhost.errors import StorageFull
from tests.support import disks
from tests.support.services import in_process_services, run_with_coordinator

SCRATCH = ModelCreate(id="scratch", task="text-generation", backend="tests.support.backends:CountingStream", source="-")


@pytest.fixture
def worker_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB tmpfs as the workers' temporary folder (``TMPDIR`` in the server's environment, which workers keep);
    this process keeps its own temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", tempfile.gettempdir())
    with disks.small_disk(tmp_path / "worker-tmp", "1m") as disk:
        monkeypatch.setenv("TMPDIR", str(disk))
        yield disk


def assert_storage_full(error: StorageFull, folder: Path) -> None:
    assert (error.status_code, error.error_type, error.code) == (507, "service_unavailable", "storage_full")
    assert f"no space left in {folder} " in error.message, error.message
    assert "Retry-After" not in error.headers


async def until(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("started_by", ["spawn", "zygote"])
def test_a_worker_whose_temporary_folder_is_full_answers_507_and_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_tmp: Path, started_by: str
) -> None:
    """A backend's write that fails with ENOSPC (an ``OSError`` no code of the backend expects): 507 from the worker,
    for a plain request and a stream alike; once there is room, the same worker process answers. A worker forked
    from a zygote takes its temporary folder from its own environment, as a spawned one."""
    with in_process_services(tmp_path / "data", monkeypatch, SCRATCH) as services:

        async def main(services: Services) -> dict[str, Any]:
            model = services.catalog.get_or_raise("scratch")
            coordinator = services.coordinator
            if started_by == "zygote":
                assert await coordinator.prestart_zygote(model)
                assert await until(lambda: [z["state"] for z in coordinator.zygotes()] == ["READY"])
            await coordinator.warm_up(model)
            (worker,) = coordinator.workers()
            assert worker["started_by"] == started_by
            pid = worker["pid"]
            disks.fill(worker_tmp)
            with pytest.raises(StorageFull) as plain:
                await coordinator.infer(model, {"scratch_bytes": 256 * 1024})
            assert_storage_full(plain.value, worker_tmp)
            marker = tmp_path / "marker"
            stream = coordinator.infer_stream(model, {"scratch_bytes": 256 * 1024, "marker": str(marker)})
            with pytest.raises(StorageFull) as streamed:
                await anext(stream)
            assert_storage_full(streamed.value, worker_tmp)
            assert not marker.exists()  # failed before its first chunk

            (worker_tmp / "filler").unlink()
            result = await coordinator.infer(model, {"scratch_bytes": 256 * 1024})
            (worker,) = coordinator.workers()
            return {"result": result, "pid": pid, "worker": worker}

        outcome = run_with_coordinator(services, lambda: main(services))
    assert outcome["result"]["scratch"] == str(worker_tmp)  # written where the full disk was
    assert outcome["worker"]["pid"] == outcome["pid"]  # the same worker: not restarted, not crashed
    assert outcome["worker"]["requests"] == 3  # each answered once: no retry
    assert list(worker_tmp.iterdir()) == []  # no scratch file left behind


def test_ffmpeg_encoding_speech_onto_a_full_disk_is_507_not_an_empty_answer(tmp_path: Path, worker_tmp: Path) -> None:
    """eSpeak NG speaks, ffmpeg encodes FLAC into a file in the worker's temporary folder: on a full disk ffmpeg 5
    exits 0 with an empty file and "No space left on device" in its output — 507 naming the folder through the real
    API, and the same worker answers the next request with real FLAC once there is room."""
    settings = Settings(data_dir=tmp_path / "data")
    request = {"model": "espeak-ng", "input": "The disk is full again.", "response_format": "flac"}
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        # started before the disk fills: a worker takes its temporary folder at start (Python passes over a full
        # one then, as over any folder it cannot write to)
        assert client.post("/v1/workers/espeak-ng").status_code == 200
        disks.fill(worker_tmp)
        full = client.post("/v1/audio/speech", json=request)
        assert full.status_code == 507, full.text
        error = full.json()["error"]
        assert (error["type"], error["code"]) == ("service_unavailable", "storage_full")
        assert f"no space left in {worker_tmp} for the flac audio ffmpeg encodes" in error["message"]
        assert "Retry-After" not in full.headers
        (before,) = client.get("/v1/workers").json()["data"]

        (worker_tmp / "filler").unlink()
        spoken = client.post("/v1/audio/speech", json=request)
        assert spoken.status_code == 200, spoken.text
        assert spoken.content[:4] == b"fLaC"
        assert len(spoken.content) > 1000
        (after,) = client.get("/v1/workers").json()["data"]
        assert after["pid"] == before["pid"]
    assert list(worker_tmp.iterdir()) == []
