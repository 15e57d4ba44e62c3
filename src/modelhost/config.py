"""Process configuration: one pydantic-settings tree, built once per entry point and passed explicitly.

Every field is documented; ``docs/configuration.md`` is generated from these docstrings
(``python -m modelhost.config`` prints it).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
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


class QdrantSettings(BaseModel):
    """Qdrant: embedded local mode under ``<data_dir>/qdrant`` unless ``url`` is set."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    url: str | None = None
    """Qdrant server URL (``http://host:6333``). Unset: embedded local mode under the data dir."""

    api_key: SecretStr | None = None
    """API key of the Qdrant server, if it wants one."""

    collection_prefix: str = "modelhost_voiceprints"
    """Collections are named ``<prefix>_<model>`` (one per speaker-embedding model)."""


class StorageSettings(BaseModel):
    """Blob store (job inputs, intermediate files, artifacts): ``<data_dir>/blobs`` unless ``url`` is set."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    url: str | None = None
    """``s3://bucket/prefix``: an S3-compatible object store shared by every machine of a cluster (MinIO, AWS).
    Credentials are the standard ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or any boto3 source)."""

    endpoint_url: str | None = None
    """Endpoint of a non-AWS S3 server (``http://minio:9000``). Unset: AWS."""

    region: str | None = None
    """S3 region (``AWS_DEFAULT_REGION`` otherwise)."""

    cache_mb: int = Field(256, ge=0)
    """In a cluster (S3 and ``MODELHOST_BROKER_URL``): MiB of local copies of the blobs a process put or got, served
    again while a version register in Redis says they are current (a later step on the same node reads what an
    earlier one wrote without a GET). 0: every read goes to S3."""

    @field_validator("url")
    @classmethod
    def _s3_only(cls, value: str | None) -> str | None:
        if value and not value.startswith("s3://"):
            raise ValueError("MODELHOST_STORAGE__URL must look like s3://bucket/prefix")
        if value and not value[len("s3://") :].split("/", 1)[0]:
            raise ValueError("MODELHOST_STORAGE__URL names no bucket (s3://bucket/prefix)")
        return value


class Settings(BaseSettings):
    """modelhost process configuration (environment variables prefixed ``MODELHOST_``)."""

    model_config = SettingsConfigDict(
        env_prefix="MODELHOST_", env_nested_delimiter="__", extra="ignore", use_attribute_docstrings=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Directory for the database, Python environments, worker logs and blobs; its ``tmp/`` holds temporary files
    (uploads, and with S3 storage the blob cache's copies and the store's spools and local copies)."""

    database_url: str | None = None
    """SQLAlchemy URL. Default: SQLite at ``<data_dir>/modelhost.db``. ``postgresql://…`` uses psycopg 3."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires ``api_keys``."""

    port: int = Field(8000, ge=1, le=65535)
    """TCP port to bind."""

    admin_api_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer keys that may do everything, including change models, runtime settings, workers and environments
    (JSON list, e.g. ``'["a-long-random-key"]'``). Keep them for operators and the CLI."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    """Inference Bearer keys (JSON list): every route except those that change models, runtime settings, workers
    or environments (403 there). With neither list set there is no authentication: loopback only, requests must
    name a loopback ``Host`` (or one of ``allowed_hosts``) and changes are accepted from a loopback ``Host`` only.
    An empty key is refused at start."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Extra ``Host`` names accepted when no keys are set (JSON list, e.g. ``'["mybox.local"]'``), besides
    ``localhost``, ``127.0.0.1`` and ``::1``; any other ``Host`` gets 403 (DNS rebinding defence). Requests
    through these names may run inference but change nothing."""

    allowed_origins: list[str] = Field(default_factory=list)
    """Extra browser origins (``scheme://host[:port]``) accepted when no keys are set, besides loopback ones; a
    request with any other ``Origin`` header gets 403."""

    allow_custom_backends: bool = False
    """Let catalog entries name a ``package.module:Class`` backend. That class runs in a worker with the server's
    rights, so whoever may add a model could run any code: enable only when admin keys (or loopback) are trusted.
    Not a runtime setting on purpose."""

    allow_trust_remote_code: bool = False
    """Let model options set ``trust_remote_code`` (transformers runs Python shipped with the model). Same caveat
    as ``allow_custom_backends``."""

    run_dir: Path | None = None
    """Private (0700) directory for worker sockets. Default: a fresh directory under the system temp dir
    (Unix socket paths are limited to ~100 bytes, so the data dir is not used)."""

    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest accepted request body; bigger uploads get 413."""

    max_concurrent_uploads: int = Field(8, ge=1)
    """Multipart uploads processed at once; more are answered 429 (``too_many_uploads``) before their body is read.
    Uploads are copied to ``<data_dir>/tmp/uploads`` and handed to workers as paths, never held whole in memory (the
    form parser first spools a part above 1 MiB to the system's temporary folder); no room there is 507."""

    max_audio_seconds: float = Field(4 * 3600, gt=0)
    """Longest audio accepted for transcription, voice activity, speaker embedding and diarization; longer is
    413 (``audio_too_long``), before decoding when the container states its duration."""

    log_level: str = "INFO"
    """Log level for the serve process and its workers."""

    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    """Vector store for speaker voiceprints (``MODELHOST_QDRANT__URL`` etc.)."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
    """Blob store (``MODELHOST_STORAGE__URL`` etc.)."""

    broker_url: str | None = None
    """Celery broker (``redis://host:6379/0``). Set: jobs run as Celery tasks on ``modelhost node`` processes and
    models without a local worker are reached through a node (docs/deployment.md). Unset: everything in-process."""

    broker_visibility_timeout_seconds: float = Field(300.0, gt=0)
    """Seconds after which Redis hands a task that a node took but never acknowledged (the node died) to another
    node. A running step keeps a lease in Redis, so a redelivered copy of a live step waits instead of running
    twice; lower it for faster recovery, at the cost of more redelivery checks."""

    broker_inline_file_bytes: int = Field(1 << 20, ge=0)
    """Files of a request sent to a node (an upload to transcribe, a chunk of a meeting) up to this size travel inside
    the task message; larger ones through the blob store (S3), the task carrying their key. For a small file the
    put, get and delete on S3 cost more than its bytes through Redis; 0: every file through the blob store."""

    broker_reconcile_seconds: float = Field(30.0, gt=0)
    """How often the front looks for running jobs with no queued task and no lease in Redis (the broker lost them:
    a FLUSHALL, a restart without persistence) and queues their next step again; it also does so as soon as it sees
    that Redis lost its data or after it reconnects."""

    node_heartbeat_seconds: float = Field(5.0, gt=0)
    """How often a ``modelhost node`` writes its heartbeat (models, workers, queues) to Redis; a node silent for
    three periods is gone."""

    local_workers: bool = True
    """Run model workers in this process's coordinator. ``modelhost serve --no-local-workers`` sets it false: the
    front is a pure API and every inference goes to a node."""

    presentation_max_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Largest .pptx a presentation-video job accepts (413 above it; ``max_request_bytes`` applies first)."""

    presentation_max_slides: int = Field(200, ge=1)
    """Most slides (hidden ones counted) a presentation-video job accepts (413 above it)."""

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        if value and value.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("api_keys", "admin_api_keys")
    @classmethod
    def _no_blank_keys(cls, keys: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        variable = f"MODELHOST_{(info.field_name or '').upper()}"
        for key in keys:
            value = key.get_secret_value()
            if not value.strip():
                raise ValueError(
                    f"{variable} contains an empty key, which would let anyone in: remove it or set a long random key"
                )
            if value != value.strip() or any(c.isspace() for c in value):
                raise ValueError(f"{variable} contains a key with whitespace; keys are single tokens")
        return keys

    @model_validator(mode="after")
    def _keys_required_off_loopback(self) -> Settings:
        if not is_loopback(self.host) and not self.keys_configured:
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set MODELHOST_ADMIN_API_KEYS and/or "
                "MODELHOST_API_KEYS (e.g. MODELHOST_API_KEYS='[\"a-long-random-key\"]') before exposing modelhost "
                "to a network"
            )
        return self

    @property
    def keys_configured(self) -> bool:
        return bool(self.api_keys or self.admin_api_keys)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelhost.db'}"

    @property
    def envs_dir(self) -> Path:
        return self.data_dir / "envs"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    def api_key_values(self) -> set[str]:
        """The inference keys."""
        return {key.get_secret_value() for key in self.api_keys}

    def admin_key_values(self) -> set[str]:
        return {key.get_secret_value() for key in self.admin_api_keys}


def settings_reference() -> str:
    """Markdown table of every setting, generated from the field docstrings."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        groups: dict[str, type[BaseModel]] = {"qdrant": QdrantSettings, "storage": StorageSettings}
        nested = groups.get(name)
        if nested is not None:
            for sub, subfield in nested.model_fields.items():
                desc = (subfield.description or "").replace("\n", " ")
                rows.append(f"| `MODELHOST_{name.upper()}__{sub.upper()}` | `{subfield.default}` | {desc} |")
            continue
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
