"""The ``modelhost`` command: serve, and manage models, workers, environments and settings.

Global options (before the command): ``--url`` (or ``MODELHOST_URL``), ``--api-key`` (or ``MODELHOST_API_KEY``),
``--json`` (print the server's answers as JSON) and ``--version``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

import modelhost
from modelhost.config import Settings, is_loopback
from modelhost.jobs.cli import jobs_app

app = typer.Typer(
    help="modelhost: a self-hosted AI inference server.", no_args_is_help=True, pretty_exceptions_enable=False
)
models_app = typer.Typer(help="The model catalog (talks to a running server).", no_args_is_help=True)
workers_app = typer.Typer(help="Worker processes (talks to a running server).", no_args_is_help=True)
envs_app = typer.Typer(
    help="Python environments for models (created on the server's machine, under its data dir).", no_args_is_help=True
)
settings_app = typer.Typer(help="Runtime settings (talks to a running server).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(workers_app, name="workers")
app.add_typer(envs_app, name="envs")
app.add_typer(settings_app, name="settings")
app.add_typer(jobs_app, name="jobs")

console = Console()
err = Console(stderr=True)
log = logging.getLogger(__name__)


@dataclass
class Options:
    """The global options, shared by every command."""

    url: str | None = None
    api_key: str | None = None
    json: bool = False


OPTIONS = Options()


def _version(value: bool) -> None:
    if value:
        console.print(f"modelhost {modelhost.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    url: str | None = typer.Option(
        None, "--url", envvar="MODELHOST_URL", help="the server (default http://<MODELHOST_HOST>:<MODELHOST_PORT>)"
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="MODELHOST_API_KEY",
        help="Bearer key (default: the first of MODELHOST_ADMIN_API_KEYS, then of MODELHOST_API_KEYS)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the server's answers as JSON"),
    version: bool = typer.Option(  # noqa: ARG001 - handled by its eager callback
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """modelhost: a self-hosted AI inference server."""
    OPTIONS.url, OPTIONS.api_key, OPTIONS.json = url, api_key, as_json


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err.print(f"[red]configuration error:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None


class Api:
    """A small client for the server's API (``--url``/``MODELHOST_URL``, ``--api-key``/``MODELHOST_API_KEY``)."""

    def __init__(self) -> None:
        settings = _settings() if OPTIONS.url is None or OPTIONS.api_key is None else None
        if OPTIONS.url:
            self.url = OPTIONS.url.rstrip("/")
        else:
            assert settings is not None
            host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
            self.url = f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"
        key = OPTIONS.api_key
        if key is None and settings is not None:
            key = next(iter(sorted(settings.admin_key_values())), None) or next(
                iter(sorted(settings.api_key_values())), None
            )
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def is_local(self) -> bool:
        return is_loopback(urlsplit(self.url).hostname or "")

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            return httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=600)
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach modelhost at {self.url}:[/red] {exc} (is `modelhost serve` running?)")
            raise typer.Exit(1) from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.request(method, path, body)
        data = _decode(resp)
        if resp.status_code >= 400:
            message = data["error"]["message"] if isinstance(data, dict) and "error" in data else data
            err.print(f"[red]error {resp.status_code}:[/red] {message}")
            raise typer.Exit(1)
        return data


def _decode(resp: httpx.Response) -> Any:
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")  # not through rich: no wrapping, no markup


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="address to bind (default MODELHOST_HOST or 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (default MODELHOST_PORT or 8000)"),
    local_workers: bool = typer.Option(
        True,
        "--local-workers/--no-local-workers",
        help="run model workers here; --no-local-workers: a pure API front, inference on `modelhost node`s",
    ),
) -> None:
    """Serve the API (and the coordinator that runs model workers)."""
    import uvicorn

    from modelhost.api.app import create_app
    from modelhost.logs import configure_logging
    from modelhost.storage.files import PRIVATE_UMASK, secure_data_dir

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if not local_workers:
        overrides["local_workers"] = False
    settings = _settings(**overrides)
    if not settings.local_workers and not settings.broker_url:
        err.print("[red]--no-local-workers needs MODELHOST_BROKER_URL[/red] (the nodes that run the models)")
        raise typer.Exit(2)
    configure_logging(settings.log_level, "serve")
    os.umask(PRIVATE_UMASK)  # the database, its WAL, logs, blobs: readable by this user only (workers inherit it)
    secure_data_dir(settings.data_dir)
    if settings.api_keys and not settings.admin_api_keys:
        log.warning(
            "MODELHOST_API_KEYS is set without MODELHOST_ADMIN_API_KEYS: models, settings, workers and environments "
            "cannot be changed over HTTP"
        )
    if settings.allow_custom_backends or settings.allow_trust_remote_code:
        log.warning(
            "custom backends%s are allowed: whoever may add a model can run code as this user",
            " and trust_remote_code" if settings.allow_trust_remote_code else "",
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@models_app.command("list")
def models_list(task: str | None = typer.Option(None, help="only this task")) -> None:
    """List the catalog."""
    data = Api().call("GET", "/v1/models" + (f"?task={task}" if task else ""))["data"]
    if OPTIONS.json:
        _print_json(data)
        return
    rows = [
        [m["id"], m["task"], m["backend"], m["device"], m["python_env"], m["source"], _memory_text(m)] for m in data
    ]
    _table("models", ["id", "task", "backend", "device", "env", "source", "memory MiB"], rows)


def _memory_text(model: dict[str, Any]) -> str:
    """Last measured RSS (peak) in MiB, ``pinned`` when it is."""
    measured = model.get("memory_measured_mb")
    text = f"{measured} ({model.get('memory_peak_mb')})" if measured is not None else "-"
    return text + (" pinned" if model.get("pinned") else "")


@models_app.command("add")
def models_add(
    model_id: str = typer.Argument(..., help="the name clients will pass as `model`"),
    task: str = typer.Option(..., help="e.g. embeddings"),
    backend: str = typer.Option(..., help="built-in backend name or package.module:Class"),
    source: str = typer.Option(..., help="package:<module>/<path>, a local path or a hub id"),
    python_env: str | None = typer.Option(None, help="run in this environment (modelhost envs)"),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    threads: int | None = typer.Option(None, help="intra-op threads (default 1)"),
    idle_timeout: float | None = typer.Option(None, help="seconds; -1 never, 0 after each request"),
    pinned: bool = typer.Option(False, "--pinned", help="never evicted for memory, never stopped when idle"),
    memory_estimate_mb: int | None = typer.Option(None, help="expected peak MiB of a load, until one is measured"),
    option: list[str] = typer.Option([], help="backend option KEY=VALUE (VALUE parsed as JSON if it can be)"),
    check: bool = typer.Option(True, "--check/--no-check", help="check that the source exists before adding"),
) -> None:
    """Add a model to the catalog (its source is checked first: a path, a package:… location or a hub id)."""
    from modelhost.catalog.sources import check_source

    options: dict[str, Any] = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    api = Api()
    if check and api.is_local:
        checked = check_source(source, backend, python_env=python_env)
        if not checked.ok:
            err.print(f"[red]{checked.message}[/red] (pass --no-check to add it anyway)")
            raise typer.Exit(1)
        source = checked.source
        if not OPTIONS.json:
            err.print(f"source: {checked.message}")
    elif check:
        err.print(f"source not checked: the server at {api.url} is not on this machine")
    body = {
        "id": model_id,
        "task": task,
        "backend": backend,
        "source": source,
        "python_env": python_env,
        "device": device,
        "threads": threads,
        "idle_timeout_seconds": idle_timeout,
        "pinned": pinned,
        "memory_estimate_mb": memory_estimate_mb,
        "options": options,
    }
    created = api.call("POST", "/v1/models", body)
    if OPTIONS.json:
        _print_json(created)
        return
    console.print(f"added [bold]{created['id']}[/bold] ({created['task']}, {created['backend']})")


@models_app.command("update")
def models_update(
    model_id: str,
    pinned: bool | None = typer.Option(None, "--pinned/--unpinned", help="never evicted, never stopped when idle"),
    idle_timeout: float | None = typer.Option(None, help="seconds; -1 never, 0 after each request"),
    memory_estimate_mb: int | None = typer.Option(None, help="expected peak MiB of a load, until one is measured"),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N"),
    threads: int | None = typer.Option(None, help="intra-op threads"),
) -> None:
    """Change a model's settings (its running worker is stopped and starts again on next use)."""
    given = {
        "pinned": pinned,
        "idle_timeout_seconds": idle_timeout,
        "memory_estimate_mb": memory_estimate_mb,
        "device": device,
        "threads": threads,
    }
    body = {k: v for k, v in given.items() if v is not None}
    if not body:
        err.print("nothing to change (see --help)")
        raise typer.Exit(1)
    updated = Api().call("PATCH", f"/v1/models/{model_id}", body)
    if OPTIONS.json:
        _print_json(updated)
        return
    console.print(f"updated [bold]{updated['id']}[/bold]: " + ", ".join(f"{k}={v}" for k, v in body.items()))


@models_app.command("remove")
def models_remove(model_id: str) -> None:
    """Remove a model (its worker is stopped)."""
    data = Api().call("DELETE", f"/v1/models/{model_id}")
    if OPTIONS.json:
        _print_json(data)
        return
    console.print(f"removed {model_id}")


@workers_app.command("list")
def workers_list() -> None:
    """Running workers."""
    data = Api().call("GET", "/v1/workers")["data"]
    if OPTIONS.json:
        _print_json(data)
        return
    rows = [[w["model"], w["state"], w["pid"], w["memory_mb"], w["idle_seconds"], w["requests"]] for w in data]
    _table("workers", ["model", "state", "pid", "MiB", "idle s", "requests"], rows)


@workers_app.command("stop")
def workers_stop(model_id: str) -> None:
    """Stop a model's worker; it starts again on next use."""
    data = Api().call("DELETE", f"/v1/workers/{model_id}")
    if OPTIONS.json:
        _print_json(data)
        return
    console.print(f"stopped the worker of {model_id}")


def _local_envs_dir_or_exit(action: str) -> Path:
    """This machine's environments dir, once it is known to be the running server's (exit 1 otherwise).

    An environment made anywhere else would be invisible to the server: refuse rather than make it.
    """
    settings = _settings()
    local = settings.envs_dir.resolve()
    api = Api()
    if not api.is_local:
        err.print(
            f"[red]cannot {action} an environment of the server at {api.url}:[/red] environments live on the "
            "server's machine; run this command there"
        )
        raise typer.Exit(1)
    try:
        resp = httpx.get(api.url + "/v1/environments", headers=api.headers, timeout=30)
    except httpx.HTTPError:
        err.print(
            f"[yellow]no server answers at {api.url}:[/yellow] using {local}; a server sees this environment only "
            f"with MODELHOST_DATA_DIR={settings.data_dir.resolve()}"
        )
        return local
    data = _decode(resp)
    if resp.status_code in (401, 403):
        message = data["error"]["message"] if isinstance(data, dict) and "error" in data else data
        err.print(
            f"[red]cannot ask the server at {api.url} where it keeps environments ({resp.status_code}: {message})"
            "[/red]; pass an admin key with --api-key or MODELHOST_API_KEY"
        )
        raise typer.Exit(1)
    if resp.status_code == 404 or not isinstance(data, dict) or "envs_dir" not in data:
        err.print(f"[yellow]the server at {api.url} does not say where it keeps environments;[/yellow] using {local}")
        return local
    server = Path(data["envs_dir"])
    if server != local:
        err.print(
            f"[red]the server at {api.url} keeps environments in {server}, but this command would {action} one in "
            f"{local}, where the server would not find it.[/red] Run it with "
            f"MODELHOST_DATA_DIR={data.get('data_dir', server.parent)} (as the server's user)."
        )
        raise typer.Exit(1)
    return local


@envs_app.command("create")
def envs_create(
    name: str,
    requirements: Path | None = typer.Option(None, "--requirements", "-r", help="pip requirements file"),
    python: str | None = typer.Option(None, help="interpreter to base the venv on (default: this one)"),
) -> None:
    """Create a Python environment with the worker runtime and REQUIREMENTS installed."""
    from modelhost.catalog.envs import EnvError, EnvManager

    manager = EnvManager(_local_envs_dir_or_exit("create"))
    try:
        with console.status(f"creating environment {name} (pip install may take a while)"):
            info = manager.create(name, requirements, python=python)
    except EnvError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"created [bold]{info.name}[/bold] at {info.path} (python {info.python_version})")


@envs_app.command("list")
def envs_list() -> None:
    """List environments."""
    from dataclasses import asdict

    from modelhost.catalog.envs import EnvManager

    envs = EnvManager(_local_envs_dir_or_exit("list")).list()
    if OPTIONS.json:
        _print_json([asdict(e) for e in envs])
        return
    _table("environments", ["name", "python", "path"], [[e.name, e.python_version, e.path] for e in envs])


@envs_app.command("remove")
def envs_remove(name: str) -> None:
    """Remove an environment."""
    from modelhost.catalog.envs import EnvError, EnvManager

    try:
        EnvManager(_local_envs_dir_or_exit("remove")).remove(name)
    except EnvError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"removed {name}")


@settings_app.command("get")
def settings_get(key: str | None = typer.Argument(None, help="one setting; all when omitted")) -> None:
    """Show runtime settings."""
    data = Api().call("GET", "/v1/settings")
    values, descriptions = data["settings"], data["descriptions"]
    if key is not None:
        if key not in values:
            err.print(f"[red]unknown setting {key!r}[/red]; settings: {', '.join(values)}")
            raise typer.Exit(1)
        console.print(json.dumps(values[key]))
        return
    if OPTIONS.json:
        _print_json(values)
        return
    _table(
        "settings",
        ["name", "value", "description"],
        [[k, json.dumps(v), descriptions.get(k)] for k, v in values.items()],
    )


# ignore_unknown_options: a negative VALUE (`settings set worker_idle_timeout_seconds -1`) is a value, not an option.
@settings_app.command("set", context_settings={"ignore_unknown_options": True})
def settings_set(key: str, value: str) -> None:
    """Change a runtime setting (VALUE parsed as JSON if it can be: 30, -1, true, "exclusive")."""
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    data = Api().call("PATCH", "/v1/settings", {key: parsed})
    if OPTIONS.json:
        _print_json(data["settings"])
        return
    console.print(f"{key} = {json.dumps(data['settings'][key])}")


cluster_app = typer.Typer(help="A cluster of `modelhost node`s (reads MODELHOST_BROKER_URL).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.command()
def node(
    queues: str | None = typer.Option(
        None, help="queues to consume, comma-separated: jobs, cpu, gpu, model.<id> (default jobs,cpu)"
    ),
    preload: str | None = typer.Option(None, help="models to start at once, comma-separated (adds model.<id>)"),
    name: str | None = typer.Option(None, help="node name (default <hostname>-<pid>)"),
    concurrency: int = typer.Option(8, min=1, help="Celery threads (job steps and requests at once)"),
) -> None:
    """Run a cluster node: a Celery worker around one coordinator (its own MODELHOST_DATA_DIR)."""
    from modelhost.cluster.node import DEFAULT_QUEUES, run_node
    from modelhost.logs import configure_logging
    from modelhost.storage.files import PRIVATE_UMASK, secure_data_dir

    settings = _settings()
    if not settings.broker_url:
        err.print("[red]modelhost node needs MODELHOST_BROKER_URL[/red] (e.g. redis://host:6379/0)")
        raise typer.Exit(2)
    configure_logging(settings.log_level, "node")
    os.umask(PRIVATE_UMASK)
    secure_data_dir(settings.data_dir)
    run_node(settings, _split(queues) or list(DEFAULT_QUEUES), _split(preload), name, concurrency)


@cluster_app.command("status")
def cluster_status() -> None:
    """Live nodes: their queues, models, workers and queue depths (straight from Redis)."""
    import redis

    from modelhost.cluster.registry import NodeRegistry

    settings = _settings()
    if not settings.broker_url:
        err.print("[red]MODELHOST_BROKER_URL is not set[/red]: this machine is not part of a cluster")
        raise typer.Exit(2)
    registry = NodeRegistry(settings.broker_url, settings.node_heartbeat_seconds)
    try:
        nodes = registry.nodes()
    except redis.RedisError as exc:
        err.print(f"[red]cannot reach the broker:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        registry.close()
    if OPTIONS.json:
        _print_json(nodes)
        return
    rows = [
        [
            n["name"],
            ",".join(n.get("queues", [])),
            ",".join(n.get("models", [])),
            len(n.get("workers", [])),
            ", ".join(f"{q}={d}" for q, d in n.get("queue_depth", {}).items()),
        ]
        for n in nodes
    ]
    _table("nodes", ["name", "queues", "models", "workers", "queue depth"], rows)
    if not nodes:
        err.print("no node is alive")


def main() -> None:
    app()
