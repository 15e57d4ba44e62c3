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
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

#: The commands of a cluster, as deploy/ (compose.yaml, systemd units) runs them: ``modelhost serve`` with these
#: arguments on the front, ``modelhost node`` with node options (``NODE_OPTIONS``) on each node.
FRONT_COMMAND = ("modelhost", "serve", "--no-local-workers")
NODE_COMMAND = ("modelhost", "node")
NODE_OPTIONS = ("--queues", "--preload", "--concurrency", "--name")

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


class NodeProcess:
    """A real ``modelhost node`` process in its own session (``kill()`` takes its worker processes with it, as a
    machine that dies would)."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], args: list[str]) -> None:
        self.name = name
        self.data_dir = data_dir
        self.env = env
        self.args = args
        self.log_path = data_dir / f"node-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, broker_url: str, timeout: float = 90) -> NodeProcess:
        import redis

        from tests.support.server import REPO_ROOT

        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
        env.update(
            {
                "MODELHOST_DATA_DIR": str(self.data_dir),
                "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                **self.env,
            }
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *NODE_COMMAND, "--name", self.name, *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis.from_url(broker_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited with {self.process.returncode}:\n{self.log()}")
                if client.exists(f"modelhost:node:{self.name}"):
                    return self
                time.sleep(0.2)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"node {self.name} did not register within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL to the node and everything it started."""
        import signal

        if self.process is not None and self.process.poll() is None:
            with contextlib_suppress():
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        import signal

        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib_suppress():
            os.killpg(self.process.pid, signal.SIGKILL)  # any worker left behind

    def log(self, whole: bool = False) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if whole else text[-6000:]

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (``frozen``) or SIGCONT to the node and its worker processes: a node that stalls."""
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(ProcessLookupError, PermissionError)


class PrivateRedis:
    """A redis-server of the test's own (free port, append-only file in ``folder``) that a test may restart without
    touching the machine's shared Redis; None from ``start_or_none`` when redis-server is not installed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_or_none(cls, folder: Path) -> PrivateRedis | None:
        import shutil

        if shutil.which("redis-server") is None:
            return None
        return cls(folder).start()

    def start(self) -> PrivateRedis:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.folder),
                    "--appendonly", "yes",
                    "--save", "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("private redis-server did not start") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # redis-server flushes its append-only file on SIGTERM
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def restart(self, down_seconds: float = 2.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
