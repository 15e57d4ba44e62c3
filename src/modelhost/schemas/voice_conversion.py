"""Voice conversion (task ``voice-conversion``; used by ``POST /v1/audio/speech`` with ``reference_voice``).

The two recordings travel as files (``file``: the speech to convert, ``reference``: the target voice), never in the
payload; the result's ``audio`` is raw bytes, sent by the worker as a binary frame (never base64).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modelhost.schemas.base import TaskModel


class VoiceConversionRequest(TaskModel):
    model: str | None = Field(None, description="a voice-conversion model id (GET /v1/models)")
    response_format: Literal["wav", "pcm", "mp3", "flac", "opus", "aac"] = "wav"


class VoiceConversionResult(TaskModel):
    audio: bytes = Field(description="the converted speech, encoded as ``format`` (a binary frame from the worker)")
    format: str
    sample_rate: int
    duration: float
    details: dict[str, Any] = Field(default_factory=dict)
