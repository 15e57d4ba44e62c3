"""Speaker diarization (``POST /v1/audio/diarization``, native multipart form)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from modelhost.schemas.base import FormModel, TaskModel, invalid

DEFAULT_DIARIZATION_MODEL = "diarizer"
MAX_SPEAKERS = 64


class DiarizationRequest(FormModel):
    model: str = Field(DEFAULT_DIARIZATION_MODEL, description="a speaker-diarization model id")
    num_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="the exact number of speakers")
    min_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="at least this many speakers")
    max_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="at most this many speakers")
    threshold: float | None = Field(None, gt=0.0, lt=2.0, description="cosine distance that separates speakers (0.3)")
    response_format: Literal["json", "rttm"] = "json"
    include_embeddings: bool = Field(False, description="include each speaker's voiceprint (json)")

    @model_validator(mode="after")
    def _counts(self) -> DiarizationRequest:
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise invalid(
                "invalid_parameter",
                "give either num_speakers or min_speakers/max_speakers, not both",
                param="num_speakers",
            )
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise invalid("invalid_parameter", "min_speakers must not exceed max_speakers", param="min_speakers")
        return self

    @property
    def speaker_range(self) -> tuple[int | None, int, int]:
        """(exact number or None, lowest, highest)."""
        return self.num_speakers, self.min_speakers or 1, self.max_speakers or MAX_SPEAKERS


class Turn(TaskModel):
    start: float
    end: float
    speaker: str


class Speaker(TaskModel):
    speaker: str
    duration: float
    embedding: str | None = Field(None, description="base64 of little-endian float32, L2-normalised")


class DiarizationResult(TaskModel):
    segments: list[Turn]
    speakers: list[Speaker]
    num_speakers: int
    duration: float
