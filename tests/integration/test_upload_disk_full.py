"""A full disk under an upload: 507 ``storage_full`` through the real app, and no partial file left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.config import Settings
from tests.support import disks

#: A few MiB of "audio": the route hands it on undecoded, so its bytes do not matter.
UPLOAD = bytes(range(256)) * (3 * 4096)


def transcribe(client: TestClient) -> Any:
    return client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-tiny.en"},
        files={"file": ("long.wav", UPLOAD, "audio/wav")},
    )


def assert_storage_full(response: Any, folder: Path) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "storage_full")
    assert str(folder) in error["message"]
    assert "Retry-After" not in response.headers


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_a_full_upload_folder_answers_507_and_keeps_no_partial_copy(data_dir: Path) -> None:
    """The coordinator's copy for the worker, under ``<data_dir>/tmp/uploads`` on a 1 MiB disk, fills it."""
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with (
        disks.small_disk(data_dir / "tmp" / "uploads", "1m") as disk,
        TestClient(create_app(settings), base_url="http://localhost") as client,
    ):
        upload_dir = client.app.state.services.coordinator.upload_dir  # type: ignore[attr-defined]
        assert upload_dir.is_relative_to(disk)
        assert_storage_full(transcribe(client), upload_dir)
        assert list(upload_dir.iterdir()) == []  # the partial copy is gone
        assert client.get("/api/health").status_code == 200  # the server goes on


def test_a_full_temporary_folder_under_the_form_parser_answers_507(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form parser spools a part above 1 MiB to the system's temporary folder: full, it is 507 too (not
    FastAPI's 400 "error parsing the body"), and its spool is gone with the request."""
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with disks.small_disk(tmp_path / "system-tmp", "1m") as disk:
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        with TestClient(create_app(settings), base_url="http://localhost") as client:
            assert_storage_full(transcribe(client), disk)
            assert [p for p in disk.rglob("*") if p.is_file()] == []  # (the coordinator's socket folder is there)
