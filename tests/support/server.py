"""Start and stop a real ``modelhost serve`` process for tests and benchmarks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from modelhost.coordinator.supervisor import stop_popen

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "serve.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
        env.update(
            {
                "MODELHOST_DATA_DIR": str(self.data_dir),
                "MODELHOST_PORT": str(self.port),
                "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                # The tests' own backends (tests.support.backends) are custom backend classes: the operator's switch.
                "MODELHOST_ALLOW_CUSTOM_BACKENDS": "true",
                **self.extra_env,
            }
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelhost", "serve", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1, headers=self.auth_headers()).status_code in (
                    200,
                    401,
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout} s:\n{self.log()}")

    def auth_headers(self) -> dict[str, str]:
        """An admin key when the server has one, else an inference key, else nothing."""
        keys = self.extra_env.get("MODELHOST_ADMIN_API_KEYS") or self.extra_env.get("MODELHOST_API_KEYS")
        if not keys:
            return {}
        return {"Authorization": f"Bearer {json.loads(keys)[0]}"}

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return stop_popen(self.process, grace=15)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def client(self, timeout: float = 120, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=self.auth_headers(), **kwargs)

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url + "/api/health", headers=self.auth_headers(), timeout=10).json()
        return body

    def worker(self, model: str) -> dict[str, Any] | None:
        return next((w for w in self.health()["workers"] if w["model"] == model), None)

    def wait_for(self, predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())
