"""The coordinator's one failure translator (both request paths use it), worker error mapping, and supervision
(spawn that fails, stop with terminate-then-kill, load failures permanent or transient), on real processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import Services, build_services
from modelhost.catalog.schemas import ModelCreate
from modelhost.config import Settings
from modelhost.coordinator.coordinator import Coordinator, _WorkerWentIdle, worker_error
from modelhost.coordinator.handles import WorkerHandle
from modelhost.coordinator.sources import check_source
from modelhost.coordinator.supervisor import describe_exit, load_failure, stop_process
from modelhost.errors import (
    InferenceTimeout,
    InvalidRequest,
    ModelUnavailable,
    UnsupportedMediaType,
    WorkerCrashed,
    WorkerFailed,
)
from modelhost.metrics import Metrics
from modelhost.worker.protocol import load_error, scrub


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    services = build_services(Settings(data_dir=tmp_path, allow_custom_backends=True), Metrics())
    services.catalog.create(
        ModelCreate(id="m", task="embeddings", backend="tests.support.backends:SleepyEmbeddings", source="-")
    )
    yield services
    services.engine.dispose()


def _handle(services: Services, **fields: Any) -> WorkerHandle:
    handle = WorkerHandle(key="embeddings:m", model=services.catalog.get_or_raise("m"))
    for name, value in fields.items():
        setattr(handle, name, value)
    return handle


async def _translate(coordinator: Coordinator, handle: WorkerHandle, exc: BaseException) -> Exception:
    return await coordinator._transport_failure(handle, exc, 3.0)


def _exited(handle: WorkerHandle, code: int) -> WorkerHandle:
    handle.exit_code = code
    handle.exited.set()
    return handle


def test_no_answer_in_time_is_a_504(services: Services) -> None:
    error = asyncio.run(_translate(services.coordinator, _handle(services), TimeoutError()))
    assert isinstance(error, InferenceTimeout)
    assert error.status_code == 504
    assert "3 s" in error.message


def test_worker_that_exited_on_its_idle_timer_is_retried(services: Services) -> None:
    handle = _exited(_handle(services), 0)
    error = asyncio.run(_translate(services.coordinator, handle, ConnectionResetError()))
    assert isinstance(error, _WorkerWentIdle)


def test_worker_killed_mid_request_is_a_502_without_log_text(services: Services) -> None:
    handle = _exited(_handle(services, log_path="/nonexistent/worker.log"), -9)
    error = asyncio.run(_translate(services.coordinator, handle, ConnectionResetError()))
    assert isinstance(error, WorkerCrashed)
    assert error.status_code == 502
    assert "SIGKILL" in error.message
    assert "worker.log" not in error.message


def test_worker_stopped_on_purpose_is_a_503_with_retry_after(services: Services) -> None:
    handle = _exited(_handle(services, stop_reason="stopped"), -15)
    error = asyncio.run(_translate(services.coordinator, handle, ConnectionResetError()))
    assert isinstance(error, ModelUnavailable)
    assert error.code == "worker_stopped"
    assert error.headers == {"Retry-After": "1"}


def test_worker_stopped_for_the_request_timeout_is_a_504(services: Services) -> None:
    handle = _exited(_handle(services, stop_reason="timeout"), -9)
    error = asyncio.run(_translate(services.coordinator, handle, ConnectionResetError()))
    assert isinstance(error, InferenceTimeout)


def test_worker_error_envelopes_keep_their_status() -> None:
    unavailable = worker_error(503, {"message": "not ready", "code": "model_unavailable"})
    assert isinstance(unavailable, ModelUnavailable)
    assert unavailable.status_code == 503
    assert "Retry-After" in unavailable.headers
    ffmpeg = worker_error(503, {"message": "ffmpeg is not installed", "code": "ffmpeg_missing"})
    assert ffmpeg.status_code == 503
    assert "Retry-After" not in ffmpeg.headers  # retrying cannot install ffmpeg
    assert isinstance(worker_error(415, {"message": "x", "code": "no_audio"}), UnsupportedMediaType)
    assert worker_error(413, {"message": "x"}).status_code == 413
    assert isinstance(worker_error(400, {"message": "x", "param": "voice"}), InvalidRequest)
    assert isinstance(worker_error(500, None), WorkerFailed)


def test_load_failure_permanent_has_no_retry_after() -> None:
    permanent = load_failure(
        "m", {"error": "model package 'x' is not installed", "error_code": "model_package_missing"}
    )
    assert permanent.status_code == 503
    assert "Retry-After" not in permanent.headers
    transient = load_failure("m", {"error": "RuntimeError: out of memory", "error_code": "model_load_failed"})
    assert transient.headers == {"Retry-After": "30"}


def test_load_errors_name_the_missing_package_and_hide_reprs() -> None:
    try:
        import modelhost_no_such_library  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        message, code = load_error(exc)
    assert code == "dependency_missing"
    assert "modelhost_no_such_library" in message
    assert "install" in message
    message, code = load_error(ValueError(f"cannot read {object()!r}"))
    assert code == "model_load_failed"
    assert "0x" not in message
    assert scrub("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c>") == "cannot identify image file"


def test_missing_source_path_fails_fast_without_retry_after(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        check_source("m", str(tmp_path / "absent" / "model.onnx"))
    assert caught.value.code == "model_files_missing"
    assert "Retry-After" not in caught.value.headers
    check_source("m", str(tmp_path))  # exists
    check_source("m", "package:anything/x")  # checked by the worker
    check_source("m", "espeak-ng")  # a name the backend interprets


def test_uncached_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as caught:
        check_source("m", "sentence-transformers/all-MiniLM-L6-v2")
    assert caught.value.code == "model_not_found"
    assert "huggingface-cli download" in caught.value.message
    assert "Retry-After" not in caught.value.headers
    cached = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc"
    cached.mkdir(parents=True)
    check_source("m", "org/cached")


def test_stop_process_kills_what_ignores_sigterm() -> None:
    async def main() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        )
        await asyncio.sleep(0.3)
        return await stop_process(process, grace=0.5)

    assert describe_exit(asyncio.run(main())) == "killed by SIGKILL"
