"""Throwaway databases for tests that run on SQLite and, when MODELHOST_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


def postgres_url() -> str | None:
    return os.environ.get("MODELHOST_TEST_POSTGRES_URL") or None


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database URL of ``kind`` ("sqlite" or "postgres"; skips the test when PostgreSQL is not set)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip("MODELHOST_TEST_POSTGRES_URL is not set")
    name = f"modelhost_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
