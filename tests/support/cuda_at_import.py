"""A backend whose module leaves a file named like the CUDA driver (``libcuda.so.1``) mapped into the process when it
is imported. No driver runs on a machine without a GPU; the zygote's check (``cuda_initialized``) sees this mapping
in ``/proc/self/maps`` as it would the driver's, finds no loaded driver to ask whether CUDA is initialized, and so
counts it as initialized — the case of a library that initializes CUDA at import (the check's answers on a real
driver were measured on an H200: docs/benchmarks.md). A zygote that imported it must refuse GPU workers (spawned
plainly) and still fork CPU workers."""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

from tests.support.backends import SleepyEmbeddings

_folder = Path(tempfile.mkdtemp(prefix="modelhost-fake-driver-"))
_library = _folder / "libcuda.so.1"
_library.write_bytes(b"\0" * mmap.PAGESIZE)
with _library.open("rb") as _file:
    _MAPPED = mmap.mmap(_file.fileno(), mmap.PAGESIZE, prot=mmap.PROT_READ)


class CudaAtImportEmbeddings(SleepyEmbeddings):
    """``SleepyEmbeddings`` from a module that maps "the CUDA driver" once imported."""
