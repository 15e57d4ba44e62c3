"""Text to speech (``POST /v1/audio/speech``, OpenAI-compatible)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from modelhost.schemas.base import TaskModel, invalid

FORMATS = ("wav", "mp3", "flac", "opus", "aac", "pcm")


class SpeechRequest(TaskModel):
    model: str = Field(description="a text-to-speech model id (GET /v1/models)")
    input: str = Field(min_length=1, max_length=4096, description="the text to speak")
    voice: str | None = Field(
        None, description="a voice of the model (OpenAI names such as 'alloy' pick its default voice)"
    )
    response_format: Literal["wav", "mp3", "flac", "opus", "aac", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, description="accepted for compatibility; ignored")
    seed: int | None = Field(None, description="not OpenAI: same seed → same audio (models that sample)")

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise invalid("empty_input", "'input' must not be blank")
        return value


class SpeechChunk(TaskModel):
    audio: str = Field(description="base64 of a piece of the encoded audio")
