"""Migrations, catalog and runtime settings on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect

from modelhost.catalog.builtin import BUILTIN_MODELS
from modelhost.catalog.schemas import ModelCreate, ModelUpdate
from modelhost.catalog.secrets import REDACTED, is_secret_name, redact_options, redact_url
from modelhost.catalog.store import Catalog
from modelhost.errors import Conflict, InvalidRequest, ModelNotFound
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.storage.db import build_engine, build_sessionmaker, migrate
from modelhost.storage.files import sqlite_files


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
    catalog.on_change.append(lambda model_id, _entry: changed.append(model_id))
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
    assert changed == ["org/my-model"] * 3  # created, updated, deleted
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


# -- issue 9 #3: concurrent writes ------------------------------------------------------------------------------
def test_concurrent_creates_lose_nothing(engine: Engine) -> None:
    catalog = make_catalog(engine)
    missing: list[str] = []

    def create(i: int) -> None:
        model_id = f"user/model-{i}"
        catalog.create(ModelCreate(id=model_id, task="embeddings", backend="onnx", source="x"))
        try:  # found at once by the thread that created it
            catalog.get_or_raise(model_id)
        except ModelNotFound:
            missing.append(model_id)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(200)))
    assert missing == []
    assert {f"user/model-{i}" for i in range(200)} <= {e.id for e in catalog.list()}
    fresh = Catalog(build_sessionmaker(engine), lambda _: True)
    fresh.load()
    assert [e.id for e in fresh.list()] == [e.id for e in catalog.list()]


def test_concurrent_creates_of_one_id_give_one_entry_and_conflicts(engine: Engine) -> None:
    catalog = make_catalog(engine)
    barrier = threading.Barrier(12)

    def create(_: int) -> str:
        barrier.wait()
        try:
            catalog.create(ModelCreate(id="same", task="embeddings", backend="onnx", source="x"))
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(create, range(12)))
    assert sorted(outcomes) == ["conflict"] * 11 + ["created"]


def test_a_second_catalog_on_the_same_database_gets_a_conflict_not_an_integrity_error(engine: Engine) -> None:
    one, other = make_catalog(engine), make_catalog(engine)  # two serve processes on one database
    one.create(ModelCreate(id="shared", task="embeddings", backend="onnx", source="x"))
    with pytest.raises(Conflict):
        other.create(ModelCreate(id="shared", task="embeddings", backend="onnx", source="y"))


def test_writes_do_not_reread_the_catalog(engine: Engine) -> None:
    catalog = make_catalog(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(str(args[2])))
    catalog.create(ModelCreate(id="w", task="embeddings", backend="onnx", source="x"))
    catalog.update("w", ModelUpdate(threads=3))
    catalog.delete("w")
    full_reads = [s for s in statements if "FROM models" in s and "WHERE" not in s]
    assert full_reads == []
    assert statements  # the writes did reach the database


def test_mirror_matches_the_database_after_mixed_concurrent_writes(engine: Engine) -> None:
    catalog = make_catalog(engine)
    for i in range(20):
        catalog.create(ModelCreate(id=f"m{i}", task="embeddings", backend="onnx", source="x"))

    def work(i: int) -> None:
        if i % 2:
            catalog.update(f"m{i}", ModelUpdate(threads=i))
        else:
            catalog.delete(f"m{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(20)))
    fresh = Catalog(build_sessionmaker(engine), lambda _: True)
    fresh.load()
    assert fresh.list() == catalog.list()


# -- issue 9 #8: secrets ----------------------------------------------------------------------------------------
def test_a_redacted_secret_sent_back_keeps_the_stored_one(engine: Engine) -> None:
    catalog = make_catalog(engine)
    catalog.create(
        ModelCreate(id="gated", task="embeddings", backend="onnx", source="org/gated", options={"token": "hf_real"})
    )
    updated = catalog.update("gated", ModelUpdate(options={"token": REDACTED, "max_length": 64}))
    assert updated.options == {"token": "hf_real", "max_length": 64}
    assert catalog.update("gated", ModelUpdate(options={"token": "hf_new"})).options == {"token": "hf_new"}


def test_secret_names_and_redaction() -> None:
    for name in ("token", "hf_token", "use_auth_token", "api_key", "apiKey", "db-password", "client_secret"):
        assert is_secret_name(name), name
    for name in ("tokenizer", "max_tokens", "max_new_tokens", "keywords", "chat_template", "assemble"):
        assert not is_secret_name(name), name
    options = {"token": "hf_x", "tokenizer": "package:a/b", "nested": {"password": "p", "n": 1}, "list": [{"key": 1}]}
    assert redact_options(options) == {
        "token": REDACTED,
        "tokenizer": "package:a/b",
        "nested": {"password": REDACTED, "n": 1},
        "list": [{"key": REDACTED}],
    }
    assert redact_url("https://user:pw@example.org:8443/m") == "https://user:***@example.org:8443/m"
    assert redact_url("org/model") == "org/model"


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    database = tmp_path / "new" / "modelhost.db"
    engine = build_engine(f"sqlite:///{database}")
    catalog = make_catalog(engine)
    catalog.create(ModelCreate(id="p", task="embeddings", backend="onnx", source="x", options={"token": "t"}))
    with engine.connect() as conn:  # keep a connection open: the -wal and -shm files exist meanwhile
        conn.exec_driver_sql("SELECT 1")
        for path in sqlite_files(database):
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    engine.dispose()


def test_an_older_world_readable_database_is_tightened(tmp_path: Path) -> None:
    database = tmp_path / "modelhost.db"
    database.touch(mode=0o644)
    database.chmod(0o644)
    build_engine(f"sqlite:///{database}").dispose()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
