"""``process_dir``: a process's own temporary folder; those of processes that are gone are removed, live ones kept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.storage.files import process_dir, remove_process_dir


def dead_pid() -> int:
    """The pid of a process that has exited (as one killed with ``kill -9`` is)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def live_pid() -> Iterator[int]:
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def leftover(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "upload-abc").write_bytes(b"x" * 1000)
    return folder


def test_a_dead_process_folder_goes_a_live_one_stays(tmp_path: Path, live_pid: int) -> None:
    dead = leftover(tmp_path / f"{dead_pid()}-k3j2")
    live = leftover(tmp_path / f"{live_pid}-a8d1")
    reused = leftover(tmp_path / f"{os.getpid()}-zz00")  # our pid, not made by us: a dead process's, pid reused
    other = leftover(tmp_path / "notes-of-someone")  # not a process folder
    loose = tmp_path / "123-loose-file"
    loose.write_bytes(b"y")

    ours = process_dir(tmp_path)

    assert not dead.exists()
    assert not reused.exists()
    assert (live / "upload-abc").exists()
    assert (other / "upload-abc").exists()
    assert loose.exists()
    assert ours.parent == tmp_path
    assert ours.name.startswith(f"{os.getpid()}-")
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700
    # a second folder of this process (another store, a second app in one process) keeps the first
    second = process_dir(tmp_path)
    assert ours.is_dir()
    (ours / "upload-1").write_bytes(b"z")
    remove_process_dir(ours)
    remove_process_dir(second)
    assert not ours.exists()
    assert not second.exists()


def test_a_prefix_keeps_apart_the_folders_of_another_kind(tmp_path: Path) -> None:
    pid = dead_pid()
    cache = leftover(tmp_path / f"blobcache-{pid}-aaaa")
    plain = leftover(tmp_path / f"{pid}-bbbb")
    ours = process_dir(tmp_path, "blobcache-")
    assert not cache.exists()
    assert plain.exists()  # not a blob cache folder: another process_dir(tmp_path) removes it
    assert ours.name.startswith(f"blobcache-{os.getpid()}-")
    remove_process_dir(ours)
