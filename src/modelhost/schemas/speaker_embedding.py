"""Speaker embeddings, voiceprints (``POST /v1/audio/embeddings``, native multipart form)."""

from __future__ import annotations

from pydantic import Field

from modelhost.schemas.base import FormModel, TaskModel

DEFAULT_SPEAKER_MODEL = "resemblyzer"


class SpeakerEmbeddingRequest(FormModel):
    model: str = Field(DEFAULT_SPEAKER_MODEL, description="a speaker-embedding model id")
    vad: bool | None = Field(None, description="drop silence before embedding (default true)")
    vad_threshold: float | None = Field(None, gt=0.0, lt=1.0, description="speech probability threshold (0.5)")


class SpeakerEmbeddingResult(TaskModel):
    embedding: str | None = Field(description="base64 of little-endian float32, L2-normalised; null without speech")
    dimensions: int
    duration: float
    speech_duration: float | None = None
