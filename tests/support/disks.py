"""A real full disk for tests: a small tmpfs of its own (mounting needs root: skipped without it)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """``folder`` (created) on a tmpfs of ``size`` (writes past it fail with ENOSPC), unmounted afterwards.
    Mounting needs root (CAP_SYS_ADMIN): the test is skipped without it."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs for a full disk (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Fill the disk ``folder`` is on to its last byte."""
    with (folder / "filler").open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"f" * 4096)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"f")
