"""Failures through real worker processes: the stream and non-stream paths answer alike; start-up failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.api.composition import Services
from modelhost.catalog.schemas import ModelCreate
from modelhost.coordinator.supervisor import log_tail
from modelhost.errors import ModelUnavailable
from tests.support.services import in_process_services


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    model = ModelCreate(id="m", task="text-generation", backend="tests.support.backends:CountingStream", source="-")
    with in_process_services(tmp_path, monkeypatch, model) as services:
        yield services


def test_stream_failure_before_the_first_chunk_is_the_same_error_as_infer(services: Services) -> None:
    """A worker 503 on the stream path stays a 503 (it was turned into a 500 before)."""
    coordinator = services.coordinator
    model = services.catalog.get_or_raise("m")

    async def main() -> tuple[Exception, Exception]:
        await coordinator.start()
        try:
            errors = []
            for call in ("infer", "stream"):
                try:
                    if call == "infer":
                        await coordinator.infer(model, {"marker": "/dev/null", "fail_status": 503})
                    else:
                        async for _ in coordinator.infer_stream(model, {"marker": "/dev/null", "fail_status": 503}):
                            pass
                except Exception as exc:  # noqa: BLE001 - compared below
                    errors.append(exc)
            return errors[0], errors[1]
        finally:
            await coordinator.stop()

    plain, streamed = asyncio.run(main())
    assert type(plain) is type(streamed) is ModelUnavailable
    assert plain.code == streamed.code == "busy_on_purpose"
    # both paths keep the queue metric (read through the registry's public API: None when there is no sample)
    assert coordinator.metrics.registry.get_sample_value("modelhost_queue_depth", {"model": "m"}) == 0


def test_worker_exiting_during_start_up_is_a_503_without_its_log(services: Services, tmp_path: Path) -> None:
    services.catalog.create(
        ModelCreate(id="broken", task="embeddings", backend="tests.support.no_such_module:Nothing", source="-")
    )
    coordinator = services.coordinator
    model = services.catalog.get_or_raise("broken")

    async def main() -> ModelUnavailable:
        await coordinator.start()
        try:
            with pytest.raises(ModelUnavailable) as caught:
                await coordinator.infer(model, {"marker": "/dev/null"})
            return caught.value
        finally:
            await coordinator.stop()

    error = asyncio.run(main())
    assert error.code == "dependency_missing"  # the import of the backend module failed: permanent
    assert "tests.support.no_such_module" in error.message
    assert "Traceback" not in error.message
    assert "Retry-After" not in error.headers
    assert "no_such_module" in log_tail(str(tmp_path / "logs" / "worker-broken.log"))
