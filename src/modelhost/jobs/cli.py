"""``modelhost jobs list|show|wait|cancel|download`` (talks to a running server)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from modelhost.cli import Api

jobs_app = typer.Typer(
    help="Jobs: meeting transcriptions, enrollments… (talks to a running server).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)
TERMINAL = ("completed", "failed", "cancelled")


def _api() -> Api:
    from modelhost.cli import Api

    return Api()


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


@jobs_app.command("list")
def jobs_list(
    kind: str | None = typer.Option(None, help="only this kind"),
    status: str | None = typer.Option(None, help="only this status"),
    limit: int = typer.Option(20, help="how many (newest first)"),
    offset: int = typer.Option(0, help="skip this many"),
) -> None:
    """List jobs, newest first."""
    query = (
        f"?limit={limit}&offset={offset}" + (f"&kind={kind}" if kind else "") + (f"&status={status}" if status else "")
    )
    page = _api().call("GET", "/v1/jobs" + query)
    table = Table(title=f"jobs ({page['total']} in all)")
    for column in ("id", "kind", "status", "stage", "progress", "created"):
        table.add_column(column)
    for job in page["data"]:
        table.add_row(
            job["id"],
            job["kind"],
            job["status"],
            job["stage"] or "",
            f"{job['progress']:.0%}",
            _when(job["created_at"]),
        )
    console.print(table)


def _print_job(job: dict[str, Any]) -> None:
    console.print(
        f"[bold]{job['id']}[/bold] {job['kind']}: {job['status']}, stage {job['stage']}, {job['progress']:.0%}"
    )
    if job.get("error"):
        console.print(f"[red]error:[/red] {job['error']['message']}")
    for artifact in job.get("artifacts", []):
        console.print(f"  artifact {artifact['name']} ({artifact['media_type']}, {artifact['size']} bytes)")


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = typer.Option(False, "--json", help="print the job as JSON")) -> None:
    """Show a job (with --json: everything, including its result)."""
    job = _api().call("GET", f"/v1/jobs/{job_id}")
    if as_json:
        console.print_json(json.dumps(job))
    else:
        _print_job(job)


def _follow(api: Api, job_id: str, progress: Progress, task: Any, timeout: float) -> None:
    """Update the bar from the job's server-sent events until it ends (reconnecting if the stream drops)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with httpx.stream(
                "GET", f"{api.url}/v1/jobs/{job_id}/events", headers=api.headers, timeout=httpx.Timeout(30, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    api.call("GET", f"/v1/jobs/{job_id}")  # prints the error and exits
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    stage = event["stage"] or event["status"]
                    progress.update(task, completed=event["progress"] * 100, description=f"{stage}")
                    if event["status"] in TERMINAL:
                        return
                    if time.monotonic() > deadline:
                        return
        except httpx.HTTPError:
            time.sleep(1)


@jobs_app.command("wait")
def jobs_wait(
    job_id: str,
    timeout: float = typer.Option(24 * 3600, help="give up after this many seconds (exit 3)"),
) -> None:
    """Wait for a job with a live progress bar; exit 0 when it completed, 1 when it failed or was cancelled."""
    api = _api()
    job = api.call("GET", f"/v1/jobs/{job_id}")
    columns = (TextColumn("{task.description:<14}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(job["stage"] or job["status"], total=100, completed=job["progress"] * 100)
        if job["status"] not in TERMINAL:
            _follow(api, job_id, progress, task, timeout)
    job = api.call("GET", f"/v1/jobs/{job_id}")
    _print_job(job)
    if job["status"] not in TERMINAL:
        raise typer.Exit(3)
    if job["status"] != "completed":
        raise typer.Exit(1)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a pending or running job."""
    job = _api().call("POST", f"/v1/jobs/{job_id}/cancel")
    console.print(f"{job['id']}: {job['status']}")


@jobs_app.command("download")
def jobs_download(
    job_id: str,
    name: str | None = typer.Argument(None, help="the artifact; all of them when omitted"),
    output: Path = typer.Option(Path("."), "--output", "-o", help="a folder (or, with NAME, a file path)"),
) -> None:
    """Download a job's artifacts."""
    api = _api()
    job = api.call("GET", f"/v1/jobs/{job_id}")
    names = [a["name"] for a in job["artifacts"]]
    if name is not None and name not in names:
        err.print(f"[red]job {job_id} has no artifact {name!r}[/red]; artifacts: {', '.join(names) or 'none'}")
        raise typer.Exit(1)
    for wanted in [name] if name else names:
        target = output / wanted if output.is_dir() or name is None else output
        target.parent.mkdir(parents=True, exist_ok=True)
        with httpx.stream(
            "GET", f"{api.url}/v1/jobs/{job_id}/artifacts/{wanted}", headers=api.headers, timeout=600
        ) as response:
            if response.status_code >= 400:
                response.read()
                err.print(f"[red]error {response.status_code}:[/red] {response.text}")
                raise typer.Exit(1)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        console.print(f"{wanted} → {target}")
