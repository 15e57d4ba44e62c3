"""Voice conversion (task ``voice-conversion``): speech re-voiced like a reference recording.

Used by ``/v1/audio/speech`` with ``reference_voice`` and by the presentation-video job; the files are ``file`` (the
speech to convert) and ``reference`` (the target voice), any audio ffmpeg decodes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modelhost.schemas.base import TaskModel

DEFAULT_CONVERSION_MODEL = "world-vc"
ConversionFormat = Literal["wav", "pcm", "mp3", "flac", "opus", "aac"]


class VoiceConversionRequest(TaskModel):
    model: str = Field(DEFAULT_CONVERSION_MODEL, description="a voice-conversion model id")
    response_format: ConversionFormat = Field("wav", description="the encoding of the converted audio")


class VoiceConversionResult(TaskModel):
    audio: str = Field(description="base64 of the converted audio")
    format: ConversionFormat
    sample_rate: int
    duration: float
    details: dict[str, Any] = Field(default_factory=dict, description="what the backend measured and changed")
