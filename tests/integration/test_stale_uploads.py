"""Upload copies a server killed with ``kill -9`` left under ``<data_dir>/tmp/uploads`` go at the next start; those
of a live process sharing the data dir stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from modelhost.api.app import create_app
from modelhost.config import Settings


def test_the_next_server_removes_a_dead_process_uploads_and_keeps_a_live_one(tmp_path: Path) -> None:
    uploads = tmp_path / "tmp" / "uploads"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = uploads / f"{int(gone.stdout)}-q1w2"
    dead.mkdir(parents=True)
    (dead / "upload-abc").write_bytes(b"x" * 100_000)
    with subprocess.Popen(["sleep", "60"]) as other_server:
        live = uploads / f"{other_server.pid}-e3r4"
        live.mkdir()
        (live / "upload-def").write_bytes(b"y" * 100_000)
        with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
            own = client.app.state.services.coordinator.upload_dir  # type: ignore[attr-defined]
            assert not dead.exists()
            assert (live / "upload-def").read_bytes() == b"y" * 100_000
            assert own.parent == uploads
            assert own.name.startswith(f"{os.getpid()}-")
            assert own.is_dir()
        other_server.kill()
    assert not own.exists()  # removed at shutdown
    assert live.exists()
