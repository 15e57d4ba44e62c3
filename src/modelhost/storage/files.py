"""Private files: the data dir, the database and logs hold secrets (model options, voiceprints, transcripts).

``modelhost serve`` sets the umask to 077 so that everything it and its workers create is 0600/0700, and
``secure_data_dir`` tightens what an older release left readable to others. ``process_dir``: a process's own
temporary folder, whose leftovers after a ``kill -9`` the next process removes; ``use_process_temp_dir`` makes one
under the data dir the process's ``tempfile`` folder (the form parser's spools, job steps' scratch files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


def _tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` when it is ours and lets others in; never a shared (sticky) directory."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
            return
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:  # /tmp and the like are shared on purpose
            return
        if stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(mode)
            log.info("made %s private (%o)", path, mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700, or tighten it when it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(path, 0o700)
    return path


#: The folders ``process_dir`` made in this process (one of our pid not among them is a dead process's, its pid reused).
_OURS: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def process_dir(parent: Path, prefix: str = "") -> Path:
    """A fresh private folder of this process under ``parent`` (created 0700), ``<prefix><pid>-<random>``, after
    removing the folders there of processes that are gone: the temporary files a process killed with ``kill -9``
    left. Several processes may share ``parent`` (a data dir shared by a serve process and a node, tests): the folders
    of live processes are kept. The caller removes its own folder when done (``remove_process_dir``)."""
    private_dir(parent)
    for stale in parent.glob(f"{prefix}*-*"):
        pid_text = stale.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or not stale.is_dir() or stale.is_symlink():
            continue
        pid = int(pid_text)
        reused = pid == os.getpid() and stale not in _OURS  # a dead process's pid, now ours (pid 1 in a container)
        if reused or not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
            log.info("removed %s, left by process %d (gone)", stale, pid)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}-"))  # mkdtemp makes it 0700
    _OURS.add(folder)
    return folder


def remove_process_dir(folder: Path) -> None:
    """Remove a folder ``process_dir`` made, with what is left in it."""
    _OURS.discard(folder)
    shutil.rmtree(folder, ignore_errors=True)


def use_process_temp_dir(data_dir: Path) -> Callable[[], None]:
    """Point this process's temporary folder (``tempfile.tempdir``: where Starlette spools an upload part above 1 MiB,
    where job steps write scratch files) at a ``process_dir`` under ``<data_dir>/tmp/spool``, so that they land on
    the disk the operator sized for the data dir, not the system's ``/tmp``. An explicit ``TMPDIR`` is respected
    (nothing changes). Only this process: the workers it starts keep the environment's. Returns the undo: the
    previous folder back (when it still exists) and ours removed."""
    if os.environ.get("TMPDIR"):
        log.info("temporary files in %s (TMPDIR)", tempfile.gettempdir())
        return lambda: None
    folder = process_dir(data_dir / "tmp" / "spool")
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    log.info("temporary files in %s", folder)

    def undo() -> None:
        if tempfile.tempdir == str(folder):
            # (another app of this process may have removed its folder meanwhile: then the system's default again)
            tempfile.tempdir = previous if previous is None or os.path.isdir(previous) else None
        remove_process_dir(folder)

    return undo


def private_file(path: Path) -> None:
    """Create ``path`` empty as 0600 when missing, or tighten it."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    _tighten(path, 0o600)


def sqlite_files(database: Path) -> list[Path]:
    return [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]


def secure_sqlite(database: Path) -> None:
    """The database file exists as 0600 before SQLite opens it (SQLite gives its -wal and -shm files the mode
    of the database), and files an older release left readable are tightened."""
    if not database.parent.exists():
        private_dir(database.parent)
    private_file(database)
    for path in sqlite_files(database)[1:]:
        _tighten(path, 0o600)


def secure_data_dir(data_dir: Path) -> None:
    """The data dir 0700, its logs dir 0700 and the logs in it 0600."""
    private_dir(data_dir)
    logs = data_dir / "logs"
    if logs.is_dir():
        _tighten(logs, 0o700)
        for entry in logs.iterdir():
            _tighten(entry, 0o600)
