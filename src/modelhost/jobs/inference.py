"""Every call from a pipeline (or the speaker routes) to the coordinator, in one place.

When the coordinator's or a task schema's signature changes, only this module changes. Each function takes anything
with ``catalog`` and ``coordinator`` attributes (``JobDeps``, the app's ``Services``) and audio any ffmpeg decodes
(pipelines send 16 kHz mono WAV) as a ``Path``, a binary file object or ``bytes``: the coordinator spools it to a
private file and hands the worker its path. Every payload is the task schema's ``model_dump()`` (``model``
included); binary results (voiceprints, audio) arrive as ``bytes`` (binary frames), never base64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelhost.media.vectors import float32_values
from modelhost.schemas.diarization import DiarizationRequest, DiarizationResult
from modelhost.schemas.speaker_embedding import SpeakerEmbeddingRequest, SpeakerEmbeddingResult
from modelhost.schemas.speech_recognition import TranscriptionRequest
from modelhost.schemas.text_to_speech import SpeechRequest
from modelhost.schemas.voice_conversion import VoiceConversionRequest, VoiceConversionResult

if TYPE_CHECKING:
    from modelhost.catalog.store import Catalog
    from modelhost.coordinator.coordinator import Coordinator, FileRef

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


def floats(data: bytes | None) -> list[float] | None:
    """A voiceprint as workers send it (little-endian float32 bytes, or None) → floats, without numpy."""
    return None if data is None else float32_values(data)


async def transcribe(
    deps: InferenceDeps, audio: FileRef, *, model: str = DEFAULT_ASR_MODEL, language: str | None = None
) -> dict[str, Any]:
    """ASR with word timestamps → ``{"text", "language", "duration", "segments", "words": [{word, start, end}]}``."""
    entry = deps.catalog.get_for_task_or_raise(ASR_TASK, model)
    request = TranscriptionRequest(
        model=entry.id,
        language=language,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    return await deps.coordinator.infer(entry, request.model_dump(), files={"file": audio})


async def diarize(
    deps: InferenceDeps,
    audio: FileRef,
    *,
    model: str = DEFAULT_DIARIZATION_MODEL,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
) -> dict[str, Any]:
    """Who spoke when → ``{"duration", "num_speakers", "segments": [{start, end, speaker}], "speakers":
    [{speaker, duration, embedding: [floats] | None}]}`` (embeddings decoded)."""
    entry = deps.catalog.get_for_task_or_raise(DIARIZATION_TASK, model)
    request = DiarizationRequest(
        model=entry.id,
        num_speakers=num_speakers,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        include_embeddings=True,
    )
    raw = await deps.coordinator.infer(entry, request.model_dump(), files={"file": audio})
    result = DiarizationResult.model_validate(raw).model_dump()
    result["speakers"] = [{**s, "embedding": floats(s.get("embedding"))} for s in result["speakers"]]
    return result


@dataclass(frozen=True)
class Voiceprint:
    model: str
    vector: list[float] | None  # None: no speech found
    duration: float
    speech_duration: float


async def embed_speaker(deps: InferenceDeps, audio: FileRef, *, model: str = DEFAULT_SPEAKER_MODEL) -> Voiceprint:
    """An L2-normalised voiceprint of the speech in ``audio`` (``vector`` None when there is none)."""
    entry = deps.catalog.get_for_task_or_raise(SPEAKER_EMBEDDING_TASK, model)
    request = SpeakerEmbeddingRequest(model=entry.id)
    raw = await deps.coordinator.infer(entry, request.model_dump(), files={"file": audio})
    result = SpeakerEmbeddingResult.model_validate(raw)
    return Voiceprint(
        model=entry.id,
        vector=floats(result.embedding),
        duration=float(result.duration or 0.0),
        speech_duration=float(result.speech_duration or 0.0),
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
    request = SpeechRequest(model=entry.id, input=text, voice=voice, response_format="wav", speed=speed)
    result = await deps.coordinator.infer(entry, request.model_dump())
    audio: bytes = result["audio"]  # a binary frame
    return audio


async def convert_voice(
    deps: InferenceDeps,
    audio: FileRef,
    reference: tuple[str, bytes, str],
    *,
    model: str = DEFAULT_VOICE_CONVERSION_MODEL,
) -> bytes:
    """Speech (WAV) re-voiced toward ``reference`` (filename, bytes, content type) → a WAV file's bytes."""
    entry = deps.catalog.get_for_task_or_raise(VOICE_CONVERSION_TASK, model)
    request = VoiceConversionRequest(model=entry.id, response_format="wav")
    raw = await deps.coordinator.infer(entry, request.model_dump(), files={"file": audio, "reference": reference[1]})
    return VoiceConversionResult.model_validate(raw).audio
