"""A server killed with ``kill -9`` leaves its upload folder behind; the next server on that data dir removes it, and
keeps the folder of another server still running on the same data dir."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support.server import ServerProcess


def upload_folder(server: ServerProcess) -> Path:
    assert server.process is not None
    [folder] = (server.data_dir / "tmp" / "uploads").glob(f"{server.process.pid}-*")
    return folder


def test_a_killed_server_upload_folder_goes_with_the_next_start_a_running_one_stays(tmp_path: Path) -> None:
    data = tmp_path / "data"
    killed, running, restarted = ServerProcess(data), ServerProcess(data), ServerProcess(data)
    try:
        killed.start()
        running.start()
        left = upload_folder(killed)
        (left / "upload-in-flight").write_bytes(b"x" * 100_000)  # a copy the killed server was handing to a worker
        kept = upload_folder(running)
        (kept / "upload-in-flight").write_bytes(b"y" * 100_000)
        assert killed.process is not None
        os.kill(killed.process.pid, signal.SIGKILL)
        killed.process.wait()
        assert left.exists()

        restarted.start()
        assert not left.exists()
        assert (kept / "upload-in-flight").exists()  # a live server's copy is not touched
        own = upload_folder(restarted)
        assert own.is_dir()
        restarted.stop()
        assert not own.exists()  # a server that stops removes its own folder
    finally:
        for server in (killed, running, restarted):
            server.stop()
