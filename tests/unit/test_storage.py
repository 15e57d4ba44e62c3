"""Migrations, catalog and runtime settings on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from modelhost.catalog.builtin import BUILTIN_MODELS
from modelhost.catalog.models import Catalog, ModelCreate, ModelUpdate
from modelhost.errors import Conflict, InvalidRequest, ModelNotFound
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.storage.db import build_sessionmaker, migrate


def make_catalog(engine: Engine, envs: set[str] | None = None) -> Catalog:
    migrate(engine)
    catalog = Catalog(build_sessionmaker(engine), lambda name: name in (envs or set()))
    catalog.register_builtins(BUILTIN_MODELS)
    return catalog


def test_migrations_create_the_schema_and_are_idempotent(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"models", "runtime_settings", "alembic_version"} <= tables


def test_builtins_registered_and_user_tuning_kept(engine: Engine) -> None:
    catalog = make_catalog(engine)
    assert {m.id for m in catalog.list("embeddings")} >= {"all-minilm-l6-v2", "all-minilm-l6-v2-onnx"}
    catalog.update("all-minilm-l6-v2", ModelUpdate(threads=2, idle_timeout_seconds=5))
    again = make_catalog(engine)  # a restart registers the built-ins again
    entry = again.get_or_raise("all-minilm-l6-v2")
    assert (entry.threads, entry.idle_timeout_seconds, entry.builtin) == (2, 5, True)


def test_catalog_crud(engine: Engine) -> None:
    catalog = make_catalog(engine, envs={"other"})
    changed: list[str] = []
    catalog.on_change.append(changed.append)
    created = catalog.create(
        ModelCreate(
            id="org/my-model",
            task="embeddings",
            backend="onnx",
            source="/models/x.onnx",
            python_env="other",
            options={"max_length": 128},
        )
    )
    assert created.id == "org/my-model"
    assert created.python_env == "other"
    assert not created.builtin
    with pytest.raises(Conflict):
        catalog.create(ModelCreate(id="org/my-model", task="embeddings", backend="onnx", source="x"))
    updated = catalog.update("org/my-model", ModelUpdate(device="cuda:1", python_env=None))
    assert (updated.device, updated.python_env, updated.options) == ("cuda:1", None, {"max_length": 128})
    # the database, not only memory, holds it
    fresh = Catalog(build_sessionmaker(engine), lambda _: True)
    fresh.load()
    assert fresh.get_or_raise("org/my-model").device == "cuda:1"
    catalog.delete("org/my-model")
    assert changed == ["org/my-model", "org/my-model"]
    with pytest.raises(ModelNotFound):
        catalog.get_or_raise("org/my-model")
    with pytest.raises(Conflict, match="built in"):
        catalog.delete("all-minilm-l6-v2")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "juggling", "backend": "onnx"}, "unknown task"),
        ({"task": "embeddings", "backend": "nope"}, "unknown backend"),
        ({"task": "ocr", "backend": "onnx"}, "serves embeddings"),
        ({"task": "embeddings", "backend": "onnx", "python_env": "missing"}, "does not exist"),
    ],
)
def test_catalog_rejects_bad_entries(engine: Engine, fields: dict[str, str], message: str) -> None:
    catalog = make_catalog(engine)
    with pytest.raises(InvalidRequest, match=message):
        catalog.create(ModelCreate(id="bad", source="x", **fields))  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound):
        catalog.get_or_raise("bad")


def test_unknown_model_error_names_the_known_ones_for_the_task(engine: Engine) -> None:
    catalog = make_catalog(engine)
    with pytest.raises(ModelNotFound, match="all-minilm-l6-v2-onnx"):
        catalog.get_for_task_or_raise("embeddings", "gpt-4")


def test_runtime_settings_persist_and_validate(engine: Engine) -> None:
    migrate(engine)
    sessions = build_sessionmaker(engine)
    store = RuntimeSettingsStore(sessions)
    assert store.load().worker_idle_timeout_seconds == 60
    store.update({"worker_idle_timeout_seconds": 5, "gpu_policy": "none"})
    reloaded = RuntimeSettingsStore(sessions).load()
    assert (reloaded.worker_idle_timeout_seconds, reloaded.gpu_policy) == (5, "none")
    for bad, needle in (
        ({"worker_idle_timeout_seconds": -5}, "greater than or equal to -1"),
        ({"gpu_policy": "whatever"}, "gpu_policy"),
        ({"no_such_setting": 1}, "unknown setting"),
        ({"worker_request_timeout_seconds": "soon"}, "worker_request_timeout_seconds"),
    ):
        with pytest.raises(InvalidRequest, match=needle):
            store.update(bad)
    assert RuntimeSettingsStore(sessions).load() == reloaded  # a refused change changes nothing
