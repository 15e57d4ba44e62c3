"""The ``modelhost`` command: serve, and manage models, workers, environments and settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from modelhost.config import Settings
from modelhost.jobs.cli import jobs_app

app = typer.Typer(
    help="modelhost: a self-hosted AI inference server.", no_args_is_help=True, pretty_exceptions_enable=False
)
models_app = typer.Typer(help="The model catalog (talks to a running server).", no_args_is_help=True)
workers_app = typer.Typer(help="Worker processes (talks to a running server).", no_args_is_help=True)
envs_app = typer.Typer(help="Python environments for models (local, under the data dir).", no_args_is_help=True)
settings_app = typer.Typer(help="Runtime settings (talks to a running server).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(workers_app, name="workers")
app.add_typer(envs_app, name="envs")
app.add_typer(settings_app, name="settings")
app.add_typer(jobs_app, name="jobs")

console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]configuration error:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None


class Api:
    """A small client for the server's API, reading MODELHOST_URL / MODELHOST_API_KEY."""

    def __init__(self) -> None:
        settings = _settings()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        self.url = os.environ.get("MODELHOST_URL", f"http://{host}:{settings.port}")
        key = os.environ.get("MODELHOST_API_KEY") or next(iter(settings.api_key_values()), None)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=600)
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot reach modelhost at {self.url}:[/red] {exc} (is `modelhost serve` running?)")
            raise typer.Exit(1) from None
        data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        if resp.status_code >= 400:
            message = data["error"]["message"] if isinstance(data, dict) and "error" in data else data
            err.print(f"[red]error {resp.status_code}:[/red] {message}")
            raise typer.Exit(1)
        return data


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
) -> None:
    """Serve the API (and the coordinator that runs model workers)."""
    import uvicorn

    from modelhost.api.app import create_app
    from modelhost.logs import configure_logging

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err.print(f"[red]configuration error:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, "serve")
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
    rows = [[m["id"], m["task"], m["backend"], m["device"], m["python_env"], m["source"]] for m in data]
    _table("models", ["id", "task", "backend", "device", "env", "source"], rows)


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
    option: list[str] = typer.Option([], help="backend option KEY=VALUE (VALUE parsed as JSON if it can be)"),
) -> None:
    """Add a model to the catalog."""
    options: dict[str, Any] = {}
    for item in option:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    body = {
        "id": model_id,
        "task": task,
        "backend": backend,
        "source": source,
        "python_env": python_env,
        "device": device,
        "threads": threads,
        "idle_timeout_seconds": idle_timeout,
        "options": options,
    }
    created = Api().call("POST", "/v1/models", body)
    console.print(f"added [bold]{created['id']}[/bold] ({created['task']}, {created['backend']})")


@models_app.command("remove")
def models_remove(model_id: str) -> None:
    """Remove a model (its worker is stopped)."""
    Api().call("DELETE", f"/v1/models/{model_id}")
    console.print(f"removed {model_id}")


@workers_app.command("list")
def workers_list() -> None:
    """Running workers."""
    data = Api().call("GET", "/v1/workers")["data"]
    rows = [[w["model"], w["state"], w["pid"], w["memory_mb"], w["idle_seconds"], w["requests"]] for w in data]
    _table("workers", ["model", "state", "pid", "MiB", "idle s", "requests"], rows)


@workers_app.command("stop")
def workers_stop(model_id: str) -> None:
    """Stop a model's worker; it starts again on next use."""
    Api().call("DELETE", f"/v1/workers/{model_id}")
    console.print(f"stopped the worker of {model_id}")


@envs_app.command("create")
def envs_create(
    name: str,
    requirements: Path | None = typer.Option(None, "--requirements", "-r", help="pip requirements file"),
    python: str | None = typer.Option(None, help="interpreter to base the venv on (default: this one)"),
) -> None:
    """Create a Python environment with the worker runtime and REQUIREMENTS installed."""
    from modelhost.catalog.envs import EnvError, EnvManager

    manager = EnvManager(_settings().envs_dir)
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
    from modelhost.catalog.envs import EnvManager

    envs = EnvManager(_settings().envs_dir).list()
    _table("environments", ["name", "python", "path"], [[e.name, e.python_version, e.path] for e in envs])


@envs_app.command("remove")
def envs_remove(name: str) -> None:
    """Remove an environment."""
    from modelhost.catalog.envs import EnvError, EnvManager

    try:
        EnvManager(_settings().envs_dir).remove(name)
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
    _table(
        "settings",
        ["name", "value", "description"],
        [[k, json.dumps(v), descriptions.get(k)] for k, v in values.items()],
    )


@settings_app.command("set")
def settings_set(key: str, value: str) -> None:
    """Change a runtime setting (VALUE parsed as JSON if it can be: 30, true, "exclusive")."""
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    data = Api().call("PATCH", "/v1/settings", {key: parsed})
    console.print(f"{key} = {json.dumps(data['settings'][key])}")


def main() -> None:
    app()
