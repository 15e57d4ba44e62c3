"""What the coordinator knows about one worker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from modelhost.catalog.schemas import ModelEntry
from modelhost.coordinator.client import WorkerClient
from modelhost.coordinator.zygote import ForkedProcess

STARTING = "STARTING"
READY = "READY"
BUSY = "BUSY"
TERMINATED = "TERMINATED"


@dataclass
class WorkerHandle:
    key: str
    model: ModelEntry
    state: str = TERMINATED
    process: asyncio.subprocess.Process | ForkedProcess | None = None
    client: WorkerClient | None = None
    socket_path: str | None = None
    log_path: str | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    last_used: float = field(default_factory=time.monotonic)
    idle_timeout: float = 60.0
    pending: int = 0  # waiting for admission/spawn or running
    in_flight: int = 0  # sent to the worker
    next_model: ModelEntry | None = None  # the catalog's newer entry, for the next spawn
    held: int = 0  # pending but held back (waiting for the GPU lock or for a draining load): no protection
    reserved_bytes: int = 0  # RAM reserved for its load (counted while STARTING, against the RAM budget)
    reserved_gpu_bytes: int = 0  # the same on its GPU
    gpu_bytes: int = 0  # GPU memory it reported after load
    requests: int = 0
    spawns: int = 0
    exit_code: int | None = None
    stop_reason: str | None = None  # why the coordinator stopped it (stopped, timeout, startup, shutdown)
    spawn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.exited.is_set()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.alive else None

    def status(self) -> dict[str, Any]:
        from modelhost.worker.protocol import read_memory_status

        pid = self.pid
        rss, peak = (read_memory_status(pid) or (None, None)) if pid else (None, None)
        state = self.state
        if state == READY and self.in_flight:
            state = BUSY
        return {
            "model": self.model.id,
            "key": self.key,
            "task": self.model.task,
            "state": state,
            "pid": pid,
            "started_by": ("zygote" if isinstance(self.process, ForkedProcess) else "spawn") if pid else None,
            "socket": self.socket_path,
            "device": self.model.device,
            "python_env": self.model.python_env,
            "idle_seconds": round(time.monotonic() - self.last_used, 3) if pid else None,
            "idle_timeout": self.idle_timeout,
            "rss_bytes": rss,
            "rss_peak_bytes": peak,
            "memory_mb": round((rss or 0) / 2**20, 1) if pid else None,
            "gpu_memory_bytes": self.gpu_bytes if pid and self.model.uses_gpu else None,
            "pinned": self.model.pinned,
            "queued": max(0, self.pending - self.in_flight),
            "in_flight": self.in_flight,
            "requests": self.requests,
            "spawns": self.spawns,
            "last_exit_code": self.exit_code,
            "log": self.log_path,
        }
