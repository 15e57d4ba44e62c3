"""Catalog schemas: what a client sends to add or change a model, and what the catalog holds (ML-free)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelhost.catalog.registry import TASKS

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"


class ModelFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    python_env: str | None = Field(None, description="Python environment (see `modelhost envs`); null: the server's")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, le=256, description="intra-op threads; null: 1")
    idle_timeout_seconds: float | None = Field(
        None,
        ge=-1,
        description="override of worker_idle_timeout_seconds: -1 never exit, 0 exit after each request",
    )
    memory_estimate_mb: int | None = Field(
        None,
        ge=0,
        description="expected peak memory of a load (RAM, or GPU memory on a GPU), used by admission until the "
        "first load is measured",
    )
    pinned: bool = Field(False, description="never evicted to make room and never stopped on its idle timeout")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="backend options; values of secret-looking names (token, key, secret, password) are "
        "answered as '***' and a '***' sent back keeps the stored value",
    )
    description: str = Field("", max_length=1000)


class ModelCreate(ModelFields):
    id: str = Field(pattern=MODEL_ID_PATTERN, description="the name clients pass as `model`")
    task: str = Field(description="one of: " + ", ".join(TASKS))
    backend: str = Field(
        min_length=1,
        max_length=200,
        description="built-in backend name, or package.module:Class when the operator allows custom backends",
    )
    source: str = Field(min_length=1, max_length=1000, description="package:<module>/<path>, a local path or a hub id")


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, min_length=1, max_length=1000)
    python_env: str | None = None
    device: str | None = Field(None, pattern=DEVICE_PATTERN)
    threads: int | None = Field(None, ge=1, le=256)
    idle_timeout_seconds: float | None = Field(None, ge=-1)
    memory_estimate_mb: int | None = Field(None, ge=0)
    pinned: bool | None = None
    options: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=1000)


NULLABLE_FIELDS = frozenset({"python_env", "threads", "idle_timeout_seconds", "memory_estimate_mb"})
"""Fields of ``ModelUpdate`` where an explicit null means "back to the default" (elsewhere null means unchanged)."""


class ModelEntry(ModelCreate):
    builtin: bool = False
    created_at: datetime | None = None
    # The last figures measured by a worker of this model (MiB; null until its first load): resident memory after
    # load, its peak (VmHWM), and on a GPU the device memory it held and its peak. Read-only.
    memory_measured_mb: int | None = None
    memory_peak_mb: int | None = None
    gpu_memory_measured_mb: int | None = None
    gpu_memory_peak_mb: int | None = None

    @property
    def uses_gpu(self) -> bool:
        return self.device.startswith("cuda")
