"""deploy/: compose.yaml, the Dockerfile and the systemd units run the commands the cluster test runs.

No Docker daemon runs here (no ``dockerd``, no ``docker compose`` plugin, no registry to pull images from), so the
compose file is checked as YAML: its services, the commands of ``api`` and ``node`` (parsed by modelhost's own CLI,
as the systemd units' ``ExecStart`` are) and the environment names, against tests/support/cluster.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main
import yaml

from modelhost.cli import app
from modelhost.config import Settings
from tests.support.cluster import FRONT_COMMAND, NODE_COMMAND, NODE_OPTIONS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def parse(command: list[str]) -> Any:
    """The command line parsed by the real CLI (``modelhost …``) without running it: a wrong option fails here."""
    assert Path(command[0]).name == "modelhost", command
    group: Any = typer.main.get_command(app)  # a click group (typer's own click in recent typer releases)
    sub = group.commands[command[1]]
    return sub.make_context(command[1], list(command[2:]))


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def exec_start(unit: str) -> list[str]:
    text = (DEPLOY / "systemd" / unit).read_text()
    found = re.search(r"^ExecStart=(.+)$", text, re.MULTILINE)
    assert found, unit
    return shlex.split(found.group(1))


def node_options(command: list[str]) -> set[str]:
    return {token for token in command if token.startswith("--")}


def test_compose_services_and_commands_are_the_cluster_tests() -> None:
    services = compose()["services"]
    assert {"api", "node", "redis", "postgres", "minio", "qdrant"} <= set(services)
    assert services["api"]["command"] == list(FRONT_COMMAND)
    node = services["node"]["command"]
    assert tuple(node[: len(NODE_COMMAND)]) == NODE_COMMAND
    assert node_options(node) <= set(NODE_OPTIONS)
    assert parse(services["api"]["command"]).params["local_workers"] is False
    assert parse(node).params["queues"]
    assert services["api"]["build"]["dockerfile"] == services["node"]["build"]["dockerfile"] == "deploy/Dockerfile"
    # Redis keeps its data on disk (an append-only file): queued steps survive a restart.
    assert "--appendonly" in services["redis"]["command"]


def test_compose_environment_names_are_settings() -> None:
    env = compose()["x-modelhost-env"]
    fields = {name.upper() for name in Settings.model_fields}
    for name in env:
        if name.startswith("MODELHOST_"):
            assert name.removeprefix("MODELHOST_").split("__")[0] in fields, name
    for name in ("MODELHOST_BROKER_URL", "MODELHOST_DATABASE_URL", "MODELHOST_STORAGE__URL"):
        assert name in env
    assert "MODELHOST_STORAGE__ENDPOINT_URL" in env
    assert "AWS_ACCESS_KEY_ID" in env


def test_systemd_units_run_the_cluster_commands() -> None:
    api = exec_start("modelhost-api.service")
    assert [Path(api[0]).name, *api[1:]] == list(FRONT_COMMAND)
    node = exec_start("modelhost-node.service")
    assert (Path(node[0]).name, *node[1 : len(NODE_COMMAND)]) == NODE_COMMAND
    assert node_options(node) <= set(NODE_OPTIONS)
    assert parse(node).params["preload"]


def test_dockerfile_installs_the_package_and_runs_modelhost() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^RUN pip install .*"\.\[defaults\]"', text, re.MULTILINE)
    assert 'CMD ["modelhost", "serve"]' in text
