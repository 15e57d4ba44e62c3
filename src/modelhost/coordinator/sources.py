"""Fail fast, before spawning a worker, on a model source that cannot load: a missing local path, or a hub id that
is not in the local cache while the hub cannot be reached (libraries would retry silently for minutes).

These are permanent failures: answered 503 without Retry-After, with what to install or set. Runs in the serve
process, so it imports no model library; the hub is probed with one TCP connect, only for uncached hub ids.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from modelhost.errors import ModelUnavailable

HUB_HOST = "huggingface.co"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_source(model_id: str, source: str) -> None:
    """Raise ``ModelUnavailable`` (no Retry-After) when ``source`` obviously cannot be loaded."""
    if source.startswith("package:") or source in ("", "-"):
        return  # packaged weights are checked by the worker, which knows its own environment
    path = Path(source).expanduser()
    if path.exists():
        return
    if source.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(
            f"model {model_id!r}: its source path {source!r} does not exist on the server; "
            "copy the model there or change the model's source (PATCH /v1/models/{id})",
            code="model_files_missing",
            retry_after=None,
        )
    if not _HUB_ID.match(source):
        return  # a name the backend interprets (an espeak-ng voice, a tesseract language)
    if _in_hub_cache(source) or (not _hub_offline() and _hub_reachable()):
        return
    raise ModelUnavailable(
        f"model {model_id!r}: {source!r} is not in the local Hugging Face cache and {HUB_HOST} cannot be reached; "
        f"download it on a connected machine (`huggingface-cli download {source}`) into HF_HOME, "
        "or point the model's source at a local directory",
        code="model_not_found",
        retry_after=None,
    )


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def _in_hub_cache(repo_id: str) -> bool:
    folder = _hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _hub_reachable(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False
