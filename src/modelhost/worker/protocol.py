"""The coordinator ↔ worker protocol. Shared by both sides, so it imports nothing but the stdlib.

* ``GET /healthz`` → ``{"state": STARTING|READY|BUSY|ERROR, "model", "error"?}``
* ``POST /infer``  → body ``{"payload": {...}, "request_id", "idle_timeout"?}`` as JSON, or multipart with a
  ``json`` part holding that object and one part per binary file (never base64 inside JSON);
  answer ``{"result", "request_id", "processing_time_ms", "model"}`` or an error envelope.
  With ``"stream": true`` in the body the answer is NDJSON: one ``{"chunk": {...}}`` line per partial result, then
  ``{"done": true, "processing_time_ms"}`` or ``{"error": {...}, "status"}``. Closing the connection cancels.
* ``POST /shutdown`` → exits after answering.
* ``GET /info``   → load time, RSS, requests served, batch statistics, interpreter and versions.

Every request carries the per-worker token in ``TOKEN_HEADER``. Errors are the envelope of
``modelhost.errors.error_envelope``; a backend's ``BadInput`` / ``BackendFault`` (``modelhost.errors``)
travel with their own status and code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

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


def read_rss_bytes(pid: int | str = "self") -> int | None:
    """Resident set size from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


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

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSpec:
        raw = (environ if environ is not None else os.environ)[SPEC_ENV]
        return cls(**json.loads(raw))
