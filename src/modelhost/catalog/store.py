"""The model catalog: rows in the database, mirrored in memory for the request path.

Reads never touch the database. Each write holds one lock across its database transaction and the update of
the mirror, and the mirror is updated from the row just written (never by reloading the table), so concurrent
writes neither lose an entry nor pay for the size of the catalog. The mirror is replaced, not mutated, so a
reader iterating it never sees it change under its feet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelhost.catalog.registry import BUILTIN_BACKENDS, TASKS, check_backend
from modelhost.catalog.schemas import NULLABLE_FIELDS, ModelCreate, ModelEntry, ModelUpdate
from modelhost.catalog.secrets import keep_redacted
from modelhost.errors import Conflict, InvalidRequest, ModelNotFound, PermissionDenied
from modelhost.storage.orm import ModelRow


@dataclass(frozen=True)
class CodePolicy:
    """What a catalog entry may make a worker run besides the built-in backends (process configuration only).

    Off by default: a custom ``package.module:Class`` backend or ``trust_remote_code`` runs code chosen by whoever
    may add a model, so only the operator can allow them (``MODELHOST_ALLOW_CUSTOM_BACKENDS``,
    ``MODELHOST_ALLOW_TRUST_REMOTE_CODE``).
    """

    allow_custom_backends: bool = False
    allow_trust_remote_code: bool = False

    def refusal(self, backend: str, options: Mapping[str, Any]) -> PermissionDenied | None:
        if not self.allow_custom_backends and backend not in BUILTIN_BACKENDS:
            return PermissionDenied(
                f"custom backend {backend!r} refused: custom backend classes run arbitrary code and are disabled; "
                "the operator can enable them with MODELHOST_ALLOW_CUSTOM_BACKENDS=true",
                param="backend",
                code="custom_backends_disabled",
            )
        if not self.allow_trust_remote_code and _trusts_remote_code(options):
            return PermissionDenied(
                "options.trust_remote_code refused: it runs Python code shipped with the model and is disabled; "
                "the operator can enable it with MODELHOST_ALLOW_TRUST_REMOTE_CODE=true",
                param="options.trust_remote_code",
                code="trust_remote_code_disabled",
            )
        return None


def _trusts_remote_code(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(
            (k == "trust_remote_code" and v not in (False, None, 0, "", "false", "False")) or _trusts_remote_code(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_trusts_remote_code(v) for v in value)
    return False


def _entry(row: ModelRow) -> ModelEntry:
    created = row.created_at
    if created is not None and created.tzinfo is None:  # SQLite keeps no zone; we always write UTC
        created = created.replace(tzinfo=UTC)
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
        pinned=bool(row.pinned),
        options=dict(row.options or {}),
        description=row.description,
        builtin=row.builtin,
        created_at=created,
        memory_measured_mb=row.memory_measured_mb,
        memory_peak_mb=row.memory_peak_mb,
        gpu_memory_measured_mb=row.gpu_memory_measured_mb,
        gpu_memory_peak_mb=row.gpu_memory_peak_mb,
    )


class Catalog:
    """Model catalog. Writes go to the database first, then to the in-memory mirror, under one lock."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        env_exists: Callable[[str], bool],
        policy: CodePolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._env_exists = env_exists
        self.policy = policy or CodePolicy()
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self.on_change: list[Callable[[str, ModelEntry | None], None]] = []  # (id, new entry or None: removed)

    def load(self) -> None:
        """Read the whole table (at start; writes through this catalog keep the mirror current themselves)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        with self._sessions() as session:
            rows = session.scalars(select(ModelRow)).all()
            self._entries = {row.id: _entry(row) for row in rows}

    def register_builtins(self, builtins: tuple[ModelCreate, ...]) -> None:
        """Insert missing built-in entries; refresh what defines them, keep what users tuned."""
        with self._lock:
            with self._sessions.begin() as session:
                for model in builtins:
                    row = session.get(ModelRow, model.id)
                    if row is None:
                        session.add(ModelRow(**model.model_dump(), builtin=True))
                    else:
                        row.task, row.backend, row.source = model.task, model.backend, model.source
                        row.description, row.builtin = model.description, True
            self._load_locked()

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
        """The entry a request may run: 404 when unknown or of another task, 403 when the code policy refuses it
        (an entry written while the operator allowed custom code, or before this check existed)."""
        entry = self._entries.get(model_id)
        if entry is None or entry.task != task:
            known = ", ".join(e.id for e in self.list(task)) or "none"
            what = f"is a {entry.task} model, not a {task} model" if entry else "not found"
            raise ModelNotFound(f"model {model_id!r} {what}; {task} models: {known}", param="model")
        if not entry.builtin and (refused := self.policy.refusal(entry.backend, entry.options)):
            refused.param = "model"
            raise refused
        return entry

    # -- writes ----------------------------------------------------------------------------------------------
    def create(self, model: ModelCreate) -> ModelEntry:
        self._validate(model.task, model.backend, model.python_env)
        if refused := self.policy.refusal(model.backend, model.options):
            raise refused
        exists = Conflict(f"model {model.id!r} already exists", param="id", code="model_exists")
        with self._lock:
            if model.id in self._entries:
                raise exists
            try:
                with self._sessions.begin() as session:
                    if session.get(ModelRow, model.id) is not None:  # written by another process
                        raise exists
                    row = ModelRow(**model.model_dump(), builtin=False)
                    session.add(row)
                    session.flush()
                    entry = _entry(row)
            except IntegrityError:  # another process inserted the same id between our read and our insert
                raise exists from None
            self._entries = {**self._entries, entry.id: entry}
        self._changed(entry.id)
        return entry

    def update(self, model_id: str, changes: ModelUpdate) -> ModelEntry:
        fields = changes.model_dump(exclude_unset=True)
        with self._lock:
            current = self.get_or_raise(model_id)
            if "python_env" in fields:
                self._validate(current.task, current.backend, fields["python_env"])
            if fields.get("options") is not None:
                fields["options"] = keep_redacted(fields["options"], current.options)
                if refused := self.policy.refusal(current.backend, fields["options"]):
                    raise refused
            with self._sessions.begin() as session:
                row = session.get(ModelRow, model_id)
                if row is None:
                    raise ModelNotFound(f"model {model_id!r} not found", param="model")
                for name, value in fields.items():
                    if value is not None or name in NULLABLE_FIELDS:
                        setattr(row, name, value)
                session.flush()
                entry = _entry(row)
            self._entries = {**self._entries, model_id: entry}
        self._changed(model_id)
        return entry

    def record_memory(self, model_id: str, figures: Mapping[str, int | None]) -> None:
        """Keep a worker's measured memory (``memory_measured_mb``, ``memory_peak_mb``, ``gpu_memory_measured_mb``,
        ``gpu_memory_peak_mb``; None leaves a figure unchanged). Not a change of the model: its worker keeps
        running (no ``on_change``). A model removed meanwhile is ignored."""
        known = ("memory_measured_mb", "memory_peak_mb", "gpu_memory_measured_mb", "gpu_memory_peak_mb")
        values = {k: int(v) for k, v in figures.items() if k in known and v is not None}
        if not values:
            return
        with self._lock:
            with self._sessions.begin() as session:
                row = session.get(ModelRow, model_id)
                if row is None:
                    return
                for name, value in values.items():
                    setattr(row, name, value)
                session.flush()
                entry = _entry(row)
            self._entries = {**self._entries, model_id: entry}

    def delete(self, model_id: str) -> None:
        with self._lock:
            entry = self.get_or_raise(model_id)
            if entry.builtin:
                raise Conflict(f"model {model_id!r} is built in and cannot be removed", code="builtin_model")
            with self._sessions.begin() as session:
                row = session.get(ModelRow, model_id)
                if row is not None:
                    session.delete(row)
            self._entries = {k: v for k, v in self._entries.items() if k != model_id}
        self._changed(model_id)

    def _changed(self, model_id: str) -> None:
        entry = self._entries.get(model_id)
        for callback in self.on_change:
            callback(model_id, entry)

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
