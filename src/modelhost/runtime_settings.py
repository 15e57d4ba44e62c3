"""Runtime settings: stored in the database, changed through ``PATCH /v1/settings``, effective at once.

The coordinator reads ``store.current`` on every decision, so a change applies to the next request; a running
worker receives a changed idle timeout with its next request.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelhost.errors import InvalidRequest
from modelhost.storage.orm import SettingRow


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    worker_idle_timeout_seconds: float = Field(
        60,
        ge=-1,
        description="idle seconds before a worker exits and frees its memory; -1 never, 0 after each request",
    )
    zygote_idle_timeout_seconds: float = Field(
        120,
        ge=-1,
        description="seconds a backend's zygote (cold start) stays after the last worker of its backend exited; "
        "-1 never stops it, 0 stops it with that worker",
    )
    worker_startup_timeout_seconds: float = Field(
        120,
        gt=0,
        le=3600,
        description="how long a new worker may take to load its model before it is killed (503)",
    )
    worker_request_timeout_seconds: float = Field(
        300, gt=0, le=86400, description="how long one inference may take before its worker is killed (504)"
    )
    gpu_policy: Literal["exclusive", "none", "memory"] = Field(
        "exclusive",
        description="exclusive: one GPU operation (worker spawn+load or inference) at a time; memory: GPU models "
        "run side by side while their measured footprints fit the GPU budget (loads one at a time); none: no "
        "serialization. The memory budgets apply under every policy",
    )
    gpu_fair_grants: int = Field(
        16,
        ge=1,
        le=100_000,
        description="exclusive policy: consecutive GPU-lock grants to the model holding the GPU while requests for "
        "other models wait",
    )
    gpu_fair_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="exclusive policy: longest a request for another model waits before the GPU goes to it; also "
        "how long a load waiting for memory waits before the busy workers it needs gone are drained",
    )
    memory_budget_bytes: int | None = Field(
        None,
        ge=0,
        description="system RAM the workers and zygotes may use together; null or 0: 80 % of MemTotal",
    )
    gpu_memory_budget_bytes: int | None = Field(
        None,
        ge=0,
        description="GPU memory the workers on one GPU may use together; null or 0: 90 % of the device's total "
        "as its first worker reports it",
    )
    max_queue_per_model: int = Field(
        256, ge=1, le=100_000, description="requests waiting or running per model before new ones get 429"
    )
    worker_max_batch_size: int = Field(
        64, ge=1, le=4096, description="most requests merged into one batch by a worker that batches"
    )
    worker_batch_wait_ms: float = Field(
        0,
        ge=0,
        le=1000,
        description=(
            "extra wait to fill a batch; 0: a lone request never waits, and under load (the last batch merged several "
            "requests) a batch waits at most 5 ms for as many requests as the last one held"
        ),
    )
    embeddings_max_inputs: int = Field(2048, ge=1, le=100_000, description="most inputs in one embeddings request")
    embeddings_max_input_chars: int = Field(
        100_000, ge=1, le=10_000_000, description="longest single embeddings input, in characters"
    )
    jobs_max_concurrency: int = Field(2, ge=1, le=256, description="jobs the local executor runs at once")
    jobs_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="tries of a job step that fails transiently (worker crashed, 503) before the job fails",
    )
    jobs_retry_backoff_seconds: float = Field(
        2.0, ge=0, le=600, description="wait before the first retry of a failed step; doubled for each further one"
    )
    meeting_chunk_seconds: float = Field(
        300, ge=10, le=7200, description="longest audio sent to one ASR or diarization call of a meeting job"
    )
    speaker_identify_threshold: float = Field(
        0.84, ge=-1, le=1, description="lowest cosine score at which a voice is taken to be an enrolled speaker"
    )
    speaker_min_speech_seconds: float = Field(
        1.0, ge=0, le=60, description="least speech an enrollment sample must hold"
    )


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    if first.get("type") == "extra_forbidden":
        known = ", ".join(RuntimeSettings.model_fields)
        return f"unknown setting {param!r}; settings: {known}", param
    return f"{param}: {first.get('msg')} (got {first.get('input')!r})", param


class RuntimeSettingsStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self.current = RuntimeSettings()

    def load(self) -> RuntimeSettings:
        with self._sessions() as session:
            stored = {row.key: row.value for row in session.scalars(select(SettingRow))}
        known = {k: v for k, v in stored.items() if k in RuntimeSettings.model_fields}
        try:
            self.current = RuntimeSettings(**known)
        except ValidationError:  # a value from an older release no longer valid: fall back per field
            values = {}
            for key, value in known.items():
                try:
                    RuntimeSettings(**{key: value})
                    values[key] = value
                except ValidationError:
                    continue
            self.current = RuntimeSettings(**values)
        return self.current

    def update(self, changes: dict[str, Any]) -> RuntimeSettings:
        with self._lock:
            try:
                updated = RuntimeSettings(**{**self.current.model_dump(), **changes})
            except ValidationError as exc:
                message, param = validation_message(exc)
                raise InvalidRequest(message, param=param, code="invalid_setting") from None
            with self._sessions.begin() as session:
                for key in changes:
                    value = getattr(updated, key)
                    row = session.get(SettingRow, key)
                    if row is None:
                        session.add(SettingRow(key=key, value=value))
                    else:
                        row.value = value
            self.current = updated
        return updated
