"""What a catalog ``source`` names, checked where a model is added (by ``modelhost models add``).

A source is ``package:<module>[/<path>]`` (files inside an installed Python package), a local path, or a hub
id (``org/name``). Only the worker reads it, so the check is a courtesy that catches typos before a model's
first request fails to load; it never imports the package (``importlib.util.find_spec`` locates it).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
NON_PATH_SOURCES = frozenset({"tesseract", "espeak-ng"})
"""Built-in backends whose source is not a location (tesseract: languages; espeak-ng: the program)."""


@dataclass(frozen=True)
class SourceCheck:
    ok: bool
    message: str
    source: str
    """The source to store: a relative local path made absolute, anything else unchanged."""


def check_source(source: str, backend: str, *, python_env: str | None = None) -> SourceCheck:
    """Whether ``source`` exists from here, and what it was taken for."""
    if ":" in backend:
        return SourceCheck(True, "not checked: a custom backend reads its source its own way", source)
    if backend in NON_PATH_SOURCES:
        return SourceCheck(True, f"not checked: backend {backend!r} does not read files", source)
    if source.startswith("package:"):
        if python_env is not None:
            return SourceCheck(True, f"not checked: the package is looked up in environment {python_env!r}", source)
        return _check_package(source)
    path = Path(source).expanduser()
    if path.exists():
        return SourceCheck(True, f"local path {path.resolve()}", str(path.resolve()))
    if source.startswith(("/", "./", "../", "~")) or source in (".", ".."):
        return SourceCheck(False, f"local path {source!r} does not exist", source)
    if HUB_ID.match(source):
        return SourceCheck(True, f"{source!r} is not a local path: taken as a model hub id", source)
    return SourceCheck(
        False,
        f"source {source!r} is neither an existing path, a 'package:<module>/<path>' location nor a hub id "
        "('org/name'); for a hub id without an organisation (e.g. 'gpt2') pass --no-check",
        source,
    )


def _check_package(source: str) -> SourceCheck:
    module, _, sub = source.removeprefix("package:").partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return SourceCheck(False, f"package {module!r} is not installed in this Python environment", source)
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.exists():
        return SourceCheck(False, f"{sub!r} not found inside package {module!r} ({path.parent})", source)
    return SourceCheck(True, f"package {module!r}: {path}", source)
