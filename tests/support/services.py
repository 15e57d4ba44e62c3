"""The serve process's services built in the test process: catalog, database and a coordinator whose workers are
real processes (the tests' own backends, importable through ``PYTHONPATH``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.composition import Services, build_services
from modelhost.catalog.schemas import ModelCreate
from modelhost.config import Settings
from modelhost.metrics import Metrics
from tests.support.server import REPO_ROOT


@contextmanager
def in_process_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *models: ModelCreate) -> Iterator[Services]:
    """Services over a data dir in ``tmp_path`` that allow custom backends, with ``models`` in the catalog."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    services = build_services(Settings(data_dir=tmp_path, allow_custom_backends=True), Metrics())
    for model in models:
        services.catalog.create(model)
    try:
        yield services
    finally:
        services.engine.dispose()


def run_with_coordinator(services: Services, coro: Callable[[], Awaitable[Any]]) -> Any:
    """``coro()`` in a fresh event loop between the coordinator's start and stop."""

    async def wrapper() -> Any:
        await services.coordinator.start()
        try:
            return await coro()
        finally:
            await services.coordinator.stop()

    return asyncio.run(wrapper())
