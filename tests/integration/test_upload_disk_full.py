"""A full disk under a request's writes (an upload's copies and spools, a job's inputs, a speaker's samples, a
reference voice): 507 ``storage_full`` through the real app, no partial file left behind, nothing else changed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.api.errors import install_error_handlers
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
        monkeypatch.setenv("TMPDIR", str(disk))  # set by the operator: the server keeps it
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        with TestClient(create_app(settings), base_url="http://localhost") as client:
            assert_storage_full(transcribe(client), disk)
            assert [p for p in disk.rglob("*") if p.is_file()] == []  # (the coordinator's socket folder is there)


def test_the_form_parser_spools_under_the_data_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``TMPDIR``, the serve process's temporary folder is its own under ``<data_dir>/tmp/spool``: the
    form parser's spool of a part above 1 MiB lands there (on a 1 MiB disk: 507 naming that folder), and the
    folder goes with the app, the previous temporary folder back."""
    monkeypatch.delenv("TMPDIR", raising=False)
    before = tempfile.gettempdir()
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with (
        disks.small_disk(data_dir / "tmp" / "spool", "1m") as disk,
        TestClient(create_app(settings), base_url="http://localhost") as client,
    ):
        ours = Path(tempfile.gettempdir())
        assert ours.parent == disk
        assert ours.name.startswith(f"{os.getpid()}-")
        assert_storage_full(transcribe(client), ours)
        assert list(ours.iterdir()) == []  # the partial spool is gone
        assert client.get("/api/health").status_code == 200
    assert tempfile.gettempdir() == before
    assert not ours.exists()


def test_an_explicit_tmpdir_is_kept(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    monkeypatch.setenv("TMPDIR", str(chosen))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read from TMPDIR again
    with TestClient(create_app(Settings(data_dir=data_dir)), base_url="http://localhost"):
        assert tempfile.gettempdir() == str(chosen)
    assert not (data_dir / "tmp" / "spool").exists()


def test_a_job_input_that_does_not_fit_creates_no_job(data_dir: Path) -> None:
    """The blob store (``<data_dir>/blobs``) on a 1 MiB disk: creating a job whose input outgrows it is 507 naming
    the folder; no job row, no input file, no job folder left (the API answers 202 only once the job exists)."""
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with (
        disks.small_disk(data_dir / "blobs", "1m") as blobs,
        TestClient(create_app(settings), base_url="http://localhost") as client,
    ):
        response = client.post(
            "/v1/jobs/meeting-transcription",
            data={"model": "whisper-tiny.en"},
            files={"file": ("meeting.wav", UPLOAD, "audio/wav")},
        )
        assert_storage_full(response, blobs)
        assert client.get("/v1/jobs").json()["total"] == 0
        assert list((blobs / "jobs").iterdir()) == []  # no job's folder, no partial input


def test_speaker_samples_that_do_not_fit_change_nothing(data_dir: Path) -> None:
    """A new enrollment whose sample does not fit: 507 and no speaker; more samples for an enrolled speaker: 507 and
    the speaker exactly as before (no job, same voiceprint count, status and time)."""
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with (
        disks.small_disk(data_dir / "blobs", "1m") as blobs,
        TestClient(create_app(settings), base_url="http://localhost") as client,
    ):
        sample = {"files": ("voice.wav", UPLOAD, "audio/wav")}
        enrolled = client.post("/v1/speakers", data={"metadata": '{"external_id": "ada"}'}, files=sample)
        assert_storage_full(enrolled, blobs)
        assert client.get("/v1/speakers/ada").status_code == 404

        speakers = client.app.state.services.speakers  # type: ignore[attr-defined]
        speakers.reserve("grace", "Grace", {"external_id": "grace"}, "resemblyzer")
        speakers.add_voiceprints("grace", [[1.0, 0.0, 0.0]])
        before = client.get("/v1/speakers/grace").json()
        added = client.post("/v1/speakers/grace/samples", files=sample)
        assert_storage_full(added, blobs)
        assert client.get("/v1/speakers/grace").json() == before
        assert client.get("/v1/jobs").json()["total"] == 0
        assert list((blobs / "jobs").iterdir()) == []  # no job's folder, no partial input


def test_a_reference_voice_that_does_not_fit_is_not_registered(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, max_request_bytes=16 * 1024 * 1024)
    with (
        disks.small_disk(data_dir / "voices", "1m") as voices,
        TestClient(create_app(settings), base_url="http://localhost") as client,
    ):
        response = client.post(
            "/v1/audio/voices", data={"name": "narrator"}, files={"file": ("narrator.wav", UPLOAD, "audio/wav")}
        )
        assert_storage_full(response, voices)
        assert list(voices.iterdir()) == []  # neither the metadata nor a partial recording
        assert client.get("/v1/audio/voices/narrator").status_code == 404


def test_any_other_full_disk_write_of_a_request_is_507_not_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a route's scratch file in the temporary folder, which no ``storage_full_in`` wraps, still
    answers 507 naming that folder (a failed ``write`` names no file), through the server's error handlers."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/scratch")
    def scratch() -> None:
        with tempfile.TemporaryFile() as out:
            out.write(b"f" * 2 * 1024 * 1024)

    with disks.small_disk(tmp_path / "scratch", "1m") as disk:
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        with TestClient(app, raise_server_exceptions=False) as client:
            assert_storage_full(client.post("/scratch"), disk)
