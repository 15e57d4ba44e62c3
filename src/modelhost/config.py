"""Process configuration: one pydantic-settings tree, built once per entry point and passed explicitly.

Every field is documented; ``docs/configuration.md`` is generated from these docstrings
(``python -m modelhost.config`` prints it).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Per-user data directory: ``$XDG_DATA_HOME/modelhost`` or ``~/.local/share/modelhost``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelhost"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """modelhost process configuration (environment variables prefixed ``MODELHOST_``)."""

    model_config = SettingsConfigDict(
        env_prefix="MODELHOST_", env_nested_delimiter="__", extra="ignore", use_attribute_docstrings=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Directory for the database, Python environments, worker logs and blobs."""

    database_url: str | None = None
    """SQLAlchemy URL. Default: SQLite at ``<data_dir>/modelhost.db``. ``postgresql://…`` uses psycopg 3."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires ``api_keys``."""

    port: int = Field(8000, ge=1, le=65535)
    """TCP port to bind."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    """Accepted Bearer keys (JSON list, e.g. ``'["k1","k2"]'``). Empty: no authentication (loopback only)."""

    run_dir: Path | None = None
    """Private (0700) directory for worker sockets. Default: a fresh directory under the system temp dir
    (Unix socket paths are limited to ~100 bytes, so the data dir is not used)."""

    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest accepted request body; bigger uploads get 413."""

    max_concurrent_uploads: int = Field(8, ge=1)
    """Multipart uploads processed at once; more are answered 429 (``too_many_uploads``) before their body is read.
    Uploads are spooled to ``<data_dir>/tmp/uploads`` and handed to workers as paths, never held whole in memory."""

    max_audio_seconds: float = Field(4 * 3600, gt=0)
    """Longest audio accepted for transcription, voice activity, speaker embedding and diarization; longer is
    413 (``audio_too_long``), before decoding when the container states its duration."""

    log_level: str = "INFO"
    """Log level for the serve process and its workers."""

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if value and value.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @model_validator(mode="after")
    def _keys_required_off_loopback(self) -> Settings:
        if not is_loopback(self.host) and not self.api_keys:
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set MODELHOST_API_KEYS "
                "(e.g. MODELHOST_API_KEYS='[\"a-long-random-key\"]') before exposing modelhost to a network"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelhost.db'}"

    @property
    def envs_dir(self) -> Path:
        return self.data_dir / "envs"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def api_key_values(self) -> set[str]:
        return {key.get_secret_value() for key in self.api_keys}


def settings_reference() -> str:
    """Markdown table of every setting, generated from the field docstrings."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default: Any = field.default
        if field.default_factory is not None:
            default = "per-user dir" if name == "data_dir" else "[]"
        desc = (field.description or "").replace("\n", " ")
        rows.append(f"| `MODELHOST_{name.upper()}` | `{default}` | {desc} |")
    return "\n".join(rows)


BEGIN_MARK = "<!-- BEGIN GENERATED: settings reference -->"
END_MARK = "<!-- END GENERATED -->"


def render_into(document: str) -> str:
    """``document`` with the text between the generated-reference markers replaced by ``settings_reference()``."""
    head, _, rest = document.partition(BEGIN_MARK)
    _, _, tail = rest.partition(END_MARK)
    return f"{head}{BEGIN_MARK}\n{settings_reference()}\n{END_MARK}{tail}"


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        target = Path(sys.argv[2])
        target.write_text(render_into(target.read_text()))
    else:
        sys.stdout.write(settings_reference() + "\n")
