"""Services of a cluster on this machine for tests: moto's S3 server (an EMULATOR of S3: no real S3 server installs
here), a dedicated Redis database, a fresh PostgreSQL database. Each skips the test with the reason when the
service cannot be reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

REDIS_URL = os.environ.get("MODELHOST_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Redis database reserved for these tests (flushed before each use).
REDIS_TEST_DB = int(os.environ.get("MODELHOST_TEST_REDIS_DB", "13"))
POSTGRES_URL = os.environ.get("MODELHOST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[str]:
    """moto in server mode (an S3 emulator, not S3): yields its endpoint URL; sets fake AWS credentials."""
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {(log_dir / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def aws_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def redis_url_or_skip() -> str:
    """``redis://…/<test db>`` flushed, or skip when no Redis answers."""
    import redis

    url = f"{REDIS_URL.rstrip('/')}/{REDIS_TEST_DB}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); start it (.ci/run does) to run cluster tests")
    return url


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new PostgreSQL database (dropped afterwards), or skip when PostgreSQL is not reachable."""
    import sqlalchemy.exc

    url = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"modelhost_cluster_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.orig}); cluster tests need it")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
