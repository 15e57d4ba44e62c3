"""Voice activity detection (``POST /v1/audio/vad``, native multipart form)."""

from __future__ import annotations

from pydantic import Field

from modelhost.schemas.base import FormModel, TaskModel

DEFAULT_VAD_MODEL = "silero-vad"


class VadRequest(FormModel):
    model: str = Field(DEFAULT_VAD_MODEL, description="a voice-activity model id")
    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="speech probability threshold (0.5)")
    min_speech_duration_ms: int | None = Field(None, ge=0, le=60_000, description="shortest speech kept (250)")
    min_silence_duration_ms: int | None = Field(None, ge=0, le=60_000, description="shortest pause that splits (300)")
    speech_pad_ms: int | None = Field(None, ge=0, le=10_000, description="padding around each segment (30)")


class Span(TaskModel):
    start: float
    end: float


class VadResult(TaskModel):
    segments: list[Span]
    duration: float
