from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelhost.config import Settings, render_into, settings_reference
from modelhost.runtime_settings import RuntimeSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELHOST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELHOST_PORT", "9123")
    settings = Settings()
    assert settings.port == 9123
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'modelhost.db'}"
    assert settings.envs_dir == tmp_path / "envs"


def test_postgres_urls_use_psycopg3() -> None:
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"


def test_api_keys_required_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="MODELHOST_API_KEYS"):
        Settings(host="0.0.0.0")
    assert Settings(host="::1").host == "::1"
    monkeypatch.setenv("MODELHOST_API_KEYS", '["k1", "k2"]')
    settings = Settings(host="0.0.0.0")
    assert settings.api_key_values() == {"k1", "k2"}
    assert "k1" not in repr(settings)  # secrets stay secret


def test_reference_documents_every_field() -> None:
    reference = settings_reference()
    for name, field in Settings.model_fields.items():
        assert f"MODELHOST_{name.upper()}" in reference
        assert field.description, f"{name} has no docstring"


def test_configuration_docs_are_current() -> None:
    text = DOCS.read_text()
    assert render_into(text) == text, "docs/configuration.md is stale: run `make docs`"
    for name, field in RuntimeSettings.model_fields.items():
        assert f"| `{name}` | {field.default if not isinstance(field.default, str) else f'`{field.default}`'} |" in text
