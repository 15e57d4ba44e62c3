"""Speech recognition (``POST /v1/audio/transcriptions`` and ``/translations``, OpenAI-compatible multipart forms).

The audio itself travels as the ``file`` part, beside these fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from modelhost.schemas.base import FormModel, TaskModel, invalid

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


class TranscriptionRequest(FormModel):
    model: str = Field(description="a speech-recognition model id (GET /v1/models?task=speech-recognition)")
    language: str | None = Field(
        None, max_length=16, description="ISO-639-1 code of the spoken language (transcriptions)"
    )
    prompt: str | None = Field(
        None, max_length=4096, description="text that guides the style or continues a previous clip"
    )
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = Field("json")
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="0 = with fallback to higher temperatures")
    timestamp_granularities: list[Literal["word", "segment"]] | None = Field(
        None,
        alias="timestamp_granularities[]",
        description="'word' and/or 'segment' (verbose_json)",
    )
    vad_filter: bool | None = Field(
        None,
        description="not OpenAI: transcribe only what Silero VAD finds to be speech (without it whisper may 'hear' "
        "words in silence or hum); default: the model's option vad_filter, true for the built-in whisper models",
    )
    stream: bool = Field(False, description="streamed transcription is not supported (refused when true)")
    task: Literal["transcribe", "translate"] = Field("transcribe", description="set by the route")

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise invalid("unsupported_parameter", "stream=true is not supported for transcriptions; omit it")
        return value

    @property
    def word_timestamps(self) -> bool:
        return "word" in (self.timestamp_granularities or ())


class Segment(TaskModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class Word(TaskModel):
    word: str
    start: float
    end: float


class TranscriptionResult(TaskModel):
    task: Literal["transcribe", "translate"]
    language: str | None
    duration: float
    text: str
    segments: list[Segment] = Field(default_factory=list)
    words: list[Word] = Field(default_factory=list)
