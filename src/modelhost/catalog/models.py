"""Catalog schemas and the catalog itself: rows in the database, mirrored in memory for the request path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelhost.catalog.registry import TASKS, check_backend
from modelhost.errors import Conflict, InvalidRequest, ModelNotFound
from modelhost.storage.orm import ModelRow

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"
TaskName = str


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
    memory_estimate_mb: int | None = Field(None, ge=0, description="expected resident memory once loaded")
    options: dict[str, Any] = Field(default_factory=dict, description="backend options")
    description: str = Field("", max_length=1000)


class ModelCreate(ModelFields):
    id: str = Field(pattern=MODEL_ID_PATTERN, description="the name clients pass as `model`")
    task: str = Field(description="one of: " + ", ".join(TASKS))
    backend: str = Field(min_length=1, max_length=200, description="built-in backend name or package.module:Class")
    source: str = Field(min_length=1, max_length=1000, description="package:<module>/<path>, a local path or a hub id")


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, min_length=1, max_length=1000)
    python_env: str | None = None
    device: str | None = Field(None, pattern=DEVICE_PATTERN)
    threads: int | None = Field(None, ge=1, le=256)
    idle_timeout_seconds: float | None = Field(None, ge=-1)
    memory_estimate_mb: int | None = Field(None, ge=0)
    options: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=1000)


class ModelEntry(ModelCreate):
    builtin: bool = False
    created_at: datetime | None = None

    @property
    def uses_gpu(self) -> bool:
        return self.device.startswith("cuda")


def _entry(row: ModelRow) -> ModelEntry:
    return ModelEntry(
        id=row.id,
        task=row.task,
        backend=row.backend,
        source=row.source,
        python_env=row.python_env,
        device=row.device,
        threads=row.threads,
        idle_timeout_seconds=row.idle_timeout_seconds,
        memory_estimate_mb=row.memory_estimate_mb,
        options=dict(row.options or {}),
        description=row.description,
        builtin=row.builtin,
        created_at=row.created_at,
    )


class Catalog:
    """Model catalog. Writes go to the database first, then replace the in-memory view."""

    def __init__(self, sessions: sessionmaker[Session], env_exists: Callable[[str], bool]) -> None:
        self._sessions = sessions
        self._env_exists = env_exists
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self.on_change: list[Callable[[str], None]] = []

    def load(self) -> None:
        with self._sessions() as session:
            rows = session.scalars(select(ModelRow)).all()
            entries = {row.id: _entry(row) for row in rows}
        with self._lock:
            self._entries = entries

    def register_builtins(self, builtins: tuple[ModelCreate, ...]) -> None:
        """Insert missing built-in entries; refresh what defines them, keep what users tuned."""
        with self._sessions.begin() as session:
            for model in builtins:
                row = session.get(ModelRow, model.id)
                if row is None:
                    session.add(ModelRow(**model.model_dump(), builtin=True))
                else:
                    row.task, row.backend, row.source = model.task, model.backend, model.source
                    row.description, row.builtin = model.description, True
        self.load()

    # -- reads (request path: memory only) -------------------------------------------------------------------
    def list(self, task: str | None = None) -> list[ModelEntry]:
        entries = self._entries.values()
        return sorted((e for e in entries if task is None or e.task == task), key=lambda e: e.id)

    def get_or_raise(self, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            known = ", ".join(e.id for e in self.list()) or "none"
            raise ModelNotFound(f"model {model_id!r} not found; known models: {known}", param="model")
        return entry

    def get_for_task_or_raise(self, task: str, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None or entry.task != task:
            known = ", ".join(e.id for e in self.list(task)) or "none"
            what = f"is a {entry.task} model, not a {task} model" if entry else "not found"
            raise ModelNotFound(f"model {model_id!r} {what}; {task} models: {known}", param="model")
        return entry

    # -- writes ----------------------------------------------------------------------------------------------
    def create(self, model: ModelCreate) -> ModelEntry:
        self._validate(model.task, model.backend, model.python_env)
        with self._sessions.begin() as session:
            if session.get(ModelRow, model.id) is not None:
                raise Conflict(f"model {model.id!r} already exists", param="id", code="model_exists")
            session.add(ModelRow(**model.model_dump(), builtin=False))
        self.load()
        return self.get_or_raise(model.id)

    def update(self, model_id: str, changes: ModelUpdate) -> ModelEntry:
        current = self.get_or_raise(model_id)
        fields = changes.model_dump(exclude_unset=True)
        if "python_env" in fields:
            self._validate(current.task, current.backend, fields["python_env"])
        with self._sessions.begin() as session:
            row = session.get(ModelRow, model_id)
            if row is None:
                raise ModelNotFound(f"model {model_id!r} not found", param="model")
            for name, value in fields.items():
                setattr(row, name, value if value is not None or name in _NULLABLE else getattr(row, name))
        self.load()
        self._changed(model_id)
        return self.get_or_raise(model_id)

    def delete(self, model_id: str) -> None:
        entry = self.get_or_raise(model_id)
        if entry.builtin:
            raise Conflict(f"model {model_id!r} is built in and cannot be removed", code="builtin_model")
        with self._sessions.begin() as session:
            row = session.get(ModelRow, model_id)
            if row is not None:
                session.delete(row)
        self.load()
        self._changed(model_id)

    def _changed(self, model_id: str) -> None:
        for callback in self.on_change:
            callback(model_id)

    def _validate(self, task: str, backend: str, python_env: str | None) -> None:
        if task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}; tasks: {', '.join(TASKS)}", param="task")
        if problem := check_backend(backend, task):
            raise InvalidRequest(problem, param="backend")
        if python_env is not None and not self._env_exists(python_env):
            raise InvalidRequest(
                f"python environment {python_env!r} does not exist; create it with "
                f"`modelhost envs create {python_env} --requirements FILE`",
                param="python_env",
                code="python_env_not_found",
            )


_NULLABLE = {"python_env", "threads", "idle_timeout_seconds", "memory_estimate_mb"}
