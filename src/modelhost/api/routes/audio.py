"""Audio routes: OpenAI-compatible ``/v1/audio/transcriptions``, ``/translations`` and ``/speech``; native
``/v1/audio/vad``, ``/embeddings`` (speaker voiceprints) and ``/diarization``.

Each route validates its request with the task's schema (``modelhost.schemas``) — multipart fields as a form model,
the file as ``UploadField`` — and sends the schema's ``model_dump()`` to the worker with the upload. Decoding and
encoding happen there (ffmpeg). Audio produced by a worker arrives base64-encoded in its JSON chunks and is decoded
here with the standard library.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from modelhost.api.deps import CatalogDep, CoordinatorDep, ServicesDep
from modelhost.api.errors import INFERENCE_ERRORS, UPLOAD_ERRORS, error_responses
from modelhost.api.routes.voices import reference_voice_or_raise, speech_in_reference_voice
from modelhost.api.uploads import UploadField, multipart_form, upload_files
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.media.audio import MEDIA_TYPES
from modelhost.media.subtitles import to_srt, to_vtt
from modelhost.schemas.diarization import DiarizationRequest, DiarizationResult
from modelhost.schemas.speaker_embedding import SpeakerEmbeddingRequest, SpeakerEmbeddingResult
from modelhost.schemas.speech_recognition import TranscriptionRequest, TranscriptionResult
from modelhost.schemas.text_to_speech import SpeechRequest
from modelhost.schemas.voice_activity import VadRequest, VadResult

router = APIRouter(tags=["audio"])


# The forms of the upload routes: the task's request schema plus the uploaded file (which is not sent as payload).
class TranscriptionForm(TranscriptionRequest):
    file: UploadField
    task: SkipJsonSchema[Literal["transcribe", "translate"]] = "transcribe"  # set by the route, not the client


class VadForm(VadRequest):
    file: UploadField


class SpeakerEmbeddingForm(SpeakerEmbeddingRequest):
    file: UploadField


class DiarizationForm(DiarizationRequest):
    file: UploadField


def _floats(encoded: str | None) -> list[float] | None:
    """Base64 little-endian float32 (as workers send vectors) → a list of floats, without numpy."""
    if encoded is None:
        return None
    values = array("f")
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _recognize(form: TranscriptionForm, task: str, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, "speech-recognition", form.model)
    request = TranscriptionRequest.model_validate(form.model_dump(exclude={"file"}) | {"task": task})
    result = TranscriptionResult.model_validate(await coordinator.infer(model, request.model_dump(), files=files))
    if request.response_format == "text":
        return Response(result.text + "\n", media_type="text/plain; charset=utf-8")
    segments = [s.model_dump() for s in result.segments]
    if request.response_format == "srt":
        return Response(to_srt(segments), media_type="application/x-subrip; charset=utf-8")
    if request.response_format == "vtt":
        return Response(to_vtt(segments), media_type="text/vtt; charset=utf-8")
    usage = {"type": "duration", "seconds": round(result.duration, 3)}  # what OpenAI reports for whisper-1
    if request.response_format != "verbose_json":
        return _json({"text": result.text, "usage": usage})
    granularities = request.timestamp_granularities or []
    body: dict[str, Any] = {"task": task, "language": result.language, "duration": result.duration}
    body["text"] = result.text
    if "segment" in granularities or not granularities:
        body["segments"] = segments
    if "word" in granularities:
        body["words"] = [w.model_dump() for w in result.words]
    body["usage"] = usage
    return _json(body)


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def create_transcription(
    form: Annotated[TranscriptionForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    return await _recognize(form, "transcribe", catalog, coordinator)


@router.post(
    "/v1/audio/translations",
    summary="Translate audio into English text (OpenAI-compatible; multilingual models only)",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def create_translation(
    form: Annotated[TranscriptionForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    return await _recognize(form, "translate", catalog, coordinator)


class SpeechRouteRequest(SpeechRequest):
    """The speech route's body: the task's request plus the native reference-voice extension (not sent to TTS)."""

    reference_voice: str | None = Field(
        None,
        description="native extension: speak in a reference voice registered with POST /v1/audio/voices "
        "(TTS, then voice conversion; the answer is not streamed)",
    )
    voice_conversion_model: str | None = Field(None, description="native extension: default world-vc")


_ROUTE_ONLY = {"reference_voice", "voice_conversion_model"}


@router.post(
    "/v1/audio/speech",
    summary="Synthesize speech (OpenAI-compatible); the audio is streamed back as it is made",
    responses=error_responses(*INFERENCE_ERRORS),
    response_class=StreamingResponse,
)
async def create_speech(
    request: SpeechRouteRequest, catalog: CatalogDep, coordinator: CoordinatorDep, services: ServicesDep
) -> Response:
    payload = request.model_dump(exclude=_ROUTE_ONLY)
    if request.reference_voice:
        reference = reference_voice_or_raise(services.settings, request.reference_voice)
        conversion = request.voice_conversion_model
        return await speech_in_reference_voice(payload, reference, conversion, request.model, catalog, coordinator)
    model = resolve_model_or_raise(catalog, "text-to-speech", request.model)
    chunks = coordinator.infer_stream(model, payload)
    # The first chunk comes before the answer starts, so that bad input (an unknown voice) is still a 400.
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = {"audio": ""}

    async def body() -> AsyncIterator[bytes]:
        try:
            yield base64.b64decode(first["audio"])
            async for chunk in chunks:
                yield base64.b64decode(chunk["audio"])
        finally:
            close = getattr(chunks, "aclose", None)  # an async generator: closing it releases the worker
            if close is not None:
                await close()

    return StreamingResponse(body(), media_type=MEDIA_TYPES[request.response_format])


@router.post(
    "/v1/audio/vad",
    summary="Voice activity detection: the speech segments of an audio file (native)",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def detect_voice_activity(
    form: Annotated[VadForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, "voice-activity", form.model)
    payload = form.model_dump(exclude={"file"})
    result = VadResult.model_validate(await coordinator.infer(model, payload, files=files))
    return _json({"model": model.id, **result.model_dump()})


@router.post(
    "/v1/audio/embeddings",
    summary="Speaker embedding: a 256-d L2-normalised voiceprint of the speech in an audio file (native)",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def create_speaker_embedding(
    form: Annotated[SpeakerEmbeddingForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, "speaker-embedding", form.model)
    payload = form.model_dump(exclude={"file"})
    result = SpeakerEmbeddingResult.model_validate(await coordinator.infer(model, payload, files=files))
    body = {
        "model": model.id,
        "embedding": _floats(result.embedding),  # null when the audio holds no speech
        "dimensions": result.dimensions,
        "duration": result.duration,
        "speech_duration": result.speech_duration,
    }
    return _json(body)


@router.post(
    "/v1/audio/diarization",
    summary="Speaker diarization: who spoke when (native); JSON turns or RTTM",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def create_diarization(
    form: Annotated[DiarizationForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, "speaker-diarization", form.model)
    payload = form.model_dump(exclude={"file"})
    result = DiarizationResult.model_validate(await coordinator.infer(model, payload, files=files))
    if form.response_format == "rttm":
        name = Path(form.file.filename).stem if form.file.filename else "audio"
        uri = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "audio"
        lines = [
            f"SPEAKER {uri} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n"
            for s in result.segments
        ]
        return Response("".join(lines), media_type="text/x-rttm; charset=utf-8")
    speakers = []
    for speaker in result.speakers:
        entry: dict[str, Any] = {"speaker": speaker.speaker, "duration": speaker.duration}
        if form.include_embeddings:
            entry["embedding"] = _floats(speaker.embedding)
        speakers.append(entry)
    body = {
        "model": model.id,
        "duration": result.duration,
        "num_speakers": result.num_speakers,
        "segments": [s.model_dump() for s in result.segments],
        "speakers": speakers,
    }
    return _json(body)
