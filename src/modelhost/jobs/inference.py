"""Every call from a pipeline (or the speaker routes) to the coordinator, in one place.

When the coordinator's or a task schema's signature changes, only this module changes. Each function takes anything
with ``catalog`` and ``coordinator`` attributes (``JobDeps``, the app's ``Services``) and audio bytes any ffmpeg
decodes (pipelines send 16 kHz mono WAV).
"""

from __future__ import annotations

import base64
import sys
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from modelhost.catalog.models import Catalog
    from modelhost.coordinator.coordinator import Coordinator

ASR_TASK = "speech-recognition"
DIARIZATION_TASK = "speaker-diarization"
SPEAKER_EMBEDDING_TASK = "speaker-embedding"
DEFAULT_ASR_MODEL = "whisper-tiny.en"
DEFAULT_DIARIZATION_MODEL = "diarizer"
DEFAULT_SPEAKER_MODEL = "resemblyzer"


class InferenceDeps(Protocol):
    @property
    def catalog(self) -> Catalog: ...

    @property
    def coordinator(self) -> Coordinator: ...


def _file(audio: bytes, filename: str, content_type: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (filename, audio, content_type)}


def floats(encoded: str | None) -> list[float] | None:
    """Base64 little-endian float32 (as workers send vectors) → floats, without numpy."""
    if encoded is None:
        return None
    values = array("f")
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


async def transcribe(
    deps: InferenceDeps,
    audio: bytes,
    *,
    model: str = DEFAULT_ASR_MODEL,
    language: str | None = None,
    filename: str = "audio.wav",
    content_type: str = "audio/wav",
) -> dict[str, Any]:
    """ASR with word timestamps → ``{"text", "language", "duration", "segments", "words": [{word, start, end}]}``."""
    entry = deps.catalog.get_for_task_or_raise(ASR_TASK, model)
    payload = {  # a TranscriptionRequest (modelhost.schemas.speech_recognition)
        "model": entry.id,
        "task": "transcribe",
        "language": language,
        "temperature": 0.0,
        "timestamp_granularities": ["word", "segment"],
        "vad_filter": False,
    }
    return await deps.coordinator.infer(entry, payload, files=_file(audio, filename, content_type))


async def diarize(
    deps: InferenceDeps,
    audio: bytes,
    *,
    model: str = DEFAULT_DIARIZATION_MODEL,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    filename: str = "audio.wav",
    content_type: str = "audio/wav",
) -> dict[str, Any]:
    """Who spoke when → ``{"duration", "num_speakers", "segments": [{start, end, speaker}], "speakers":
    [{speaker, duration, embedding: [floats] | None}]}`` (embeddings decoded)."""
    entry = deps.catalog.get_for_task_or_raise(DIARIZATION_TASK, model)
    counts = {"num_speakers": num_speakers, "min_speakers": min_speakers, "max_speakers": max_speakers}
    payload: dict[str, Any] = {"model": entry.id, **{k: v for k, v in counts.items() if v is not None}}
    result = await deps.coordinator.infer(entry, payload, files=_file(audio, filename, content_type))
    result["speakers"] = [{**s, "embedding": floats(s.get("embedding"))} for s in result.get("speakers", [])]
    return result


@dataclass(frozen=True)
class Voiceprint:
    model: str
    vector: list[float] | None  # None: no speech found
    duration: float
    speech_duration: float


async def embed_speaker(
    deps: InferenceDeps,
    audio: bytes,
    *,
    model: str = DEFAULT_SPEAKER_MODEL,
    filename: str = "audio.wav",
    content_type: str = "application/octet-stream",
) -> Voiceprint:
    """An L2-normalised voiceprint of the speech in ``audio`` (``vector`` None when there is none)."""
    entry = deps.catalog.get_for_task_or_raise(SPEAKER_EMBEDDING_TASK, model)
    result = await deps.coordinator.infer(entry, {"model": entry.id}, files=_file(audio, filename, content_type))
    return Voiceprint(
        model=entry.id,
        vector=floats(result.get("embedding")),
        duration=float(result.get("duration") or 0.0),
        speech_duration=float(result.get("speech_duration") or 0.0),
    )


TTS_TASK = "text-to-speech"
VOICE_CONVERSION_TASK = "voice-conversion"
DEFAULT_TTS_MODEL = "hibari"
DEFAULT_VOICE_CONVERSION_MODEL = "world-vc"


async def synthesize_speech(
    deps: InferenceDeps, text: str, *, model: str = DEFAULT_TTS_MODEL, voice: str | None = None, speed: float = 1.0
) -> bytes:
    """Text → a WAV file's bytes (the model's own sample rate, 16-bit mono)."""
    entry = deps.catalog.get_for_task_or_raise(TTS_TASK, model)
    payload = {"model": entry.id, "input": text, "voice": voice, "response_format": "wav", "speed": speed}
    result = await deps.coordinator.infer(entry, payload)
    return base64.b64decode(result["audio"])


async def convert_voice(
    deps: InferenceDeps,
    audio: bytes,
    reference: tuple[str, bytes, str],
    *,
    model: str = DEFAULT_VOICE_CONVERSION_MODEL,
) -> bytes:
    """Speech (WAV) re-voiced toward ``reference`` (filename, bytes, content type) → a WAV file's bytes."""
    entry = deps.catalog.get_for_task_or_raise(VOICE_CONVERSION_TASK, model)
    files = {"file": ("speech.wav", audio, "audio/wav"), "reference": reference}
    result = await deps.coordinator.infer(entry, {"model": entry.id, "response_format": "wav"}, files=files)
    return base64.b64decode(result["audio"])
