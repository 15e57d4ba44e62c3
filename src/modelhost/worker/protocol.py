"""The coordinator ↔ worker protocol. Shared by both sides, so it imports nothing but the stdlib.

* ``GET /healthz`` → ``{"state": STARTING|READY|BUSY|ERROR, "model", "error"?, "error_code"?}``
* inference: not HTTP, but the worker's inference socket (``modelhost.worker.frames.stream_socket_path``) — one
  long-lived connection from the coordinator, ``HELLO`` with the token first, then ``REQUEST`` frames multiplexed by
  request id. A request is the JSON object ``{"payload": {...}, "request_id", "idle_timeout"?, "stream"?, "files"?}``
  where ``files`` maps a name to an absolute path the worker opens (the coordinator spooled the upload there; same
  host, same user): binary inputs never travel inside JSON. A request refused before it starts is answered with one
  ERROR frame (its status and error envelope). Otherwise, non-streamed, one JSON frame ``{"result", "request_id",
  "processing_time_ms", "model"}`` (binary values as ``{"$bytes": i}``, followed by their BYTES frames) then DONE;
  streamed, one JSON or BYTES frame per partial result, then DONE or ERROR. ``CANCEL`` (or closing the connection)
  cancels: a stream stops generating.
* ``POST /shutdown`` → exits after answering.
* ``GET /info``   → load time, RSS and its peak, GPU memory (``gpu``: device, bytes, peak, total; on a GPU),
  requests served, batch statistics, interpreter and versions.

Every HTTP request carries the per-worker token in ``TOKEN_HEADER``; an inference connection sends it first.
Errors are the envelope of ``modelhost.errors.error_envelope``; a backend's ``BadInput`` / ``BackendFault``
(``modelhost.errors``) travel with their own status and code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from modelhost.errors import BackendError

TOKEN_HEADER = "X-Modelhost-Worker-Token"
SPEC_ENV = "MODELHOST_WORKER_SPEC"
TOKEN_ENV = "MODELHOST_WORKER_TOKEN"

STARTING = "STARTING"
READY = "READY"
BUSY = "BUSY"
ERROR = "ERROR"

# Exit codes a worker uses on purpose; anything else (or a signal) is a crash.
EXIT_IDLE = 0
EXIT_LOAD_FAILED = 3
EXIT_ORPHANED = 4

#: ``error_code`` of a load that ran out of memory (the coordinator evicts idle workers and retries once).
OUT_OF_MEMORY = "out_of_memory"


def read_rss_bytes(pid: int | str = "self") -> int | None:
    """Resident set size from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def read_memory_status(pid: int | str = "self") -> tuple[int, int] | None:
    """``(VmRSS, VmHWM)`` in bytes from /proc/<pid>/status (Linux): resident memory now and its peak."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, number, *_ = line.split()
                    values[name] = int(number) * 1024
    except (OSError, ValueError):
        return None
    if "VmRSS:" not in values:
        return None
    return values["VmRSS:"], values.get("VmHWM:", values["VmRSS:"])


def is_out_of_memory(exc: BaseException) -> bool:
    """A ``MemoryError``, or a library's out-of-memory error (torch ``OutOfMemoryError``, "CUDA out of memory")."""
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return True
    return "out of memory" in str(exc).lower()


_REPR = re.compile(r"\s*<[^<>]*? (?:object )?at 0x[0-9a-fA-F]+>")


def scrub(message: str, limit: int = 500) -> str:
    """A message fit for an API answer: no Python object reprs (``<_io.BytesIO object at 0x…>``), bounded length."""
    text = _REPR.sub("", message).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_error(exc: BaseException) -> tuple[str, str]:
    """``(message, code)`` for an exception raised while loading a backend. A missing package, path or file is
    permanent (the coordinator answers 503 without Retry-After); anything else may be transient."""
    if isinstance(exc, BackendError):
        return scrub(exc.message), exc.code
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None)
        text = str(exc)
        if "install" not in text and name:
            text = (
                f"the Python package {name!r} is not installed in this model's environment; install the modelhost "
                f"extra of this backend (docs/models.md) or `pip install {name.split('.')[0]}` there"
            )
        return scrub(text), "dependency_missing"
    if isinstance(exc, FileNotFoundError):
        return scrub(f"a model file is missing: {exc.filename or exc}"), "model_files_missing"
    if is_out_of_memory(exc):
        return scrub(f"out of memory while loading: {type(exc).__name__}: {exc}"), OUT_OF_MEMORY
    return scrub(f"{type(exc).__name__}: {exc}"), "model_load_failed"


@dataclass
class WorkerSpec:
    """Everything a worker needs, handed over by the coordinator (never read from the user's environment)."""

    model_id: str
    task: str
    backend: str  # "package.module:ClassName"
    source: str
    socket_path: str
    device: str = "cpu"
    threads: int = 1
    idle_timeout: float = 60.0  # -1 never, 0 after each request
    max_batch_size: int = 64
    batch_wait_ms: float = 0.0
    parent_pid: int = 0
    log_level: str = "INFO"
    data_dir: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    max_audio_seconds: float | None = None  # longest audio a backend decodes (413 beyond)
    forked: bool = False  # forked by a zygote (its parent is the zygote, not the coordinator ``parent_pid``)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSpec:
        raw = (environ if environ is not None else os.environ)[SPEC_ENV]
        return cls(**json.loads(raw))
