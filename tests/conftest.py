"""Shared fixtures. Tests are marked by folder: unit, integration (real workers), e2e (whole server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server on its embedded defaults, for tests that do not change global settings."""
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own (for tests that change settings or kill things)."""
    proc = ServerProcess(tmp_path / "data").start()
    yield proc
    proc.stop()


def postgres_url() -> str | None:
    return os.environ.get("MODELHOST_TEST_POSTGRES_URL") or None
