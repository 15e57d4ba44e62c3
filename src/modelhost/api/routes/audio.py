"""Audio routes: OpenAI-compatible ``/v1/audio/transcriptions``, ``/translations`` and ``/speech``; native
``/v1/audio/vad``, ``/embeddings`` (speaker voiceprints) and ``/diarization``.

Uploads are spooled to disk and handed to the worker as a path; decoding and encoding happen there (ffmpeg). Audio
and voiceprints produced by a worker arrive as raw bytes (binary frames), never base64. Speech is streamed to the
client as it is made; a failure after the answer has started aborts the response (no final chunk), so the client
sees a broken transfer rather than a short file that looks complete.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.api.forms import form_flag, form_float, form_int, form_text, read_upload_form
from modelhost.errors import InvalidRequest, ModelhostError
from modelhost.media.audio import MEDIA_TYPES
from modelhost.media.subtitles import to_srt, to_vtt
from modelhost.media.vectors import float32_values

router = APIRouter(tags=["audio"])

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")


log = logging.getLogger(__name__)


def _floats(data: bytes | None) -> list[float] | None:
    """A voiceprint as the worker sends it (little-endian float32 bytes, or None) → floats."""
    return None if data is None else float32_values(data)


async def _recognize(request: Request, task: str, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    form, files = await read_upload_form(request, "an audio file")
    model_id = form_text(form, "model")
    if not model_id:
        raise InvalidRequest("the 'model' field is required", param="model")
    response_format = form_text(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", param="response_format")
    granularities = [
        str(v) for v in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    ]
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise InvalidRequest(
                f"timestamp_granularities[] items must be word or segment, not {granularity!r}",
                param="timestamp_granularities[]",
            )
    temperature = form_float(form, "temperature") or 0.0
    if not 0.0 <= temperature <= 1.0:
        raise InvalidRequest("temperature must be between 0 and 1", param="temperature")
    vad_filter = form_flag(form, "vad_filter")
    model = catalog.get_for_task_or_raise("speech-recognition", model_id)
    payload = {
        "task": task,
        "language": form_text(form, "language") if task == "transcribe" else None,
        "prompt": form_text(form, "prompt"),
        "temperature": temperature,
        "word_timestamps": "word" in granularities,
        "vad_filter": vad_filter,
    }
    result = await coordinator.infer(model, payload, files=files)
    text = str(result["text"])
    if response_format == "text":
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if response_format == "srt":
        return Response(to_srt(result["segments"]), media_type="application/x-subrip; charset=utf-8")
    if response_format == "vtt":
        return Response(to_vtt(result["segments"]), media_type="text/vtt; charset=utf-8")
    body: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        body = {"task": task, "language": result["language"]}
        body |= {"duration": result["duration"], "text": text}
        if "segment" in granularities or not granularities:
            body["segments"] = result["segments"]
        if "word" in granularities:
            body["words"] = result["words"]
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_transcription(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    return await _recognize(request, "transcribe", catalog, coordinator)


@router.post(
    "/v1/audio/translations",
    summary="Translate audio into English text (OpenAI-compatible; multilingual models only)",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_translation(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    return await _recognize(request, "translate", catalog, coordinator)


class SpeechRequest(BaseModel):
    model: str = Field(description="a text-to-speech model id (GET /v1/models)")
    input: str = Field(min_length=1, max_length=4096, description="the text to speak")
    voice: str | None = Field(None, description="a voice of the model; unknown voices are answered 400 with the list")
    response_format: Literal["wav", "mp3", "flac", "opus", "aac", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, description="accepted for compatibility; ignored")


@router.post(
    "/v1/audio/speech",
    summary="Synthesize speech (OpenAI-compatible); the audio is streamed back as it is made",
    responses=error_responses(400, 404, 422, 429, 502, 503, 504),
    response_class=StreamingResponse,
)
async def create_speech(request: SpeechRequest, catalog: CatalogDep, coordinator: CoordinatorDep) -> StreamingResponse:
    if not request.input.strip():
        raise InvalidRequest("'input' must not be blank", param="input", code="empty_input")
    model = catalog.get_for_task_or_raise("text-to-speech", request.model)
    payload = request.model_dump(include={"input", "voice", "response_format", "speed"})
    chunks = coordinator.infer_stream(model, payload)
    # The first chunk comes before the answer starts, so that bad input (an unknown voice) is still a 400.
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    return StreamingResponse(stream_or_abort(first, chunks, model.id), media_type=MEDIA_TYPES[request.response_format])


class ResponseAborted(Exception):
    """Raised into the ASGI server after the status line was sent: it drops the connection without the final
    chunk, so the client sees an incomplete transfer instead of a truncated answer that looks complete."""


async def stream_or_abort(first: Any, chunks: AsyncIterator[Any], model_id: str) -> AsyncIterator[bytes]:
    """The audio bytes of a worker stream. An error after the answer has started cannot change the status any
    more: it is logged and the response is aborted (``ResponseAborted``), never ended cleanly."""
    try:
        if first:
            yield bytes(first)
        async for chunk in chunks:
            if not isinstance(chunk, bytes):
                raise TypeError(f"expected audio bytes from the worker, got {type(chunk).__name__}")
            yield chunk
    except ModelhostError as exc:
        log.error("speech stream of %s failed after the answer started (%s: %s); aborting", model_id, exc.code, exc)
        raise ResponseAborted(exc.message) from None
    except Exception:
        log.exception("speech stream of %s failed after the answer started; aborting", model_id)
        raise ResponseAborted("internal error") from None
    finally:
        close = getattr(chunks, "aclose", None)  # an async generator: closing it releases the worker
        if close is not None:
            await close()


@router.post(
    "/v1/audio/vad",
    summary="Voice activity detection: the speech segments of an audio file (native)",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def detect_voice_activity(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    form, files = await read_upload_form(request, "an audio file")
    model = catalog.get_for_task_or_raise("voice-activity", form_text(form, "model") or "silero-vad")
    payload: dict[str, Any] = {}
    for name in ("threshold", "min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
        value = form_float(form, name)
        if value is not None:
            payload[name] = value
    result = await coordinator.infer(model, payload, files=files)
    body = {"model": model.id, "duration": result["duration"], "segments": result["segments"]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/v1/audio/embeddings",
    summary="Speaker embedding: a 256-d L2-normalised voiceprint of the speech in an audio file (native)",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_speaker_embedding(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    form, files = await read_upload_form(request, "an audio file")
    model = catalog.get_for_task_or_raise("speaker-embedding", form_text(form, "model") or "resemblyzer")
    result = await coordinator.infer(model, {}, files=files)
    body = {
        "model": model.id,
        "embedding": _floats(result["embedding"]),  # null when the audio holds no speech
        "dimensions": result["dimensions"],
        "duration": result["duration"],
        "speech_duration": result.get("speech_duration"),
    }
    return Response(orjson.dumps(body), media_type="application/json")


DIARIZATION_FORMATS = ("json", "rttm")


@router.post(
    "/v1/audio/diarization",
    summary="Speaker diarization: who spoke when (native); JSON turns or RTTM",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_diarization(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    form, files = await read_upload_form(request, "an audio file")
    counts = {name: form_int(form, name, 1, 64) for name in ("num_speakers", "min_speakers", "max_speakers")}
    if counts["num_speakers"] is not None and (counts["min_speakers"] or counts["max_speakers"]):
        raise InvalidRequest("give either num_speakers or min_speakers/max_speakers, not both", param="num_speakers")
    low, high = counts["min_speakers"], counts["max_speakers"]
    if low is not None and high is not None and low > high:
        raise InvalidRequest("min_speakers must not exceed max_speakers", param="min_speakers")
    response_format = form_text(form, "response_format") or "json"
    if response_format not in DIARIZATION_FORMATS:
        raise InvalidRequest(
            f"response_format must be one of {', '.join(DIARIZATION_FORMATS)}", param="response_format"
        )
    include_embeddings = form_flag(form, "include_embeddings")
    model = catalog.get_for_task_or_raise("speaker-diarization", form_text(form, "model") or "diarizer")
    payload: dict[str, Any] = {k: v for k, v in counts.items() if v is not None}
    threshold = form_float(form, "threshold")
    if threshold is not None:
        payload["threshold"] = threshold
    result = await coordinator.infer(model, payload, files=files)
    segments = result["segments"]
    if response_format == "rttm":
        upload = form.get("file")
        name = Path(upload.filename).stem if isinstance(upload, UploadFile) and upload.filename else "audio"
        uri = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "audio"
        lines = [
            f"SPEAKER {uri} 1 {s['start']:.3f} {s['end'] - s['start']:.3f} <NA> <NA> {s['speaker']} <NA> <NA>\n"
            for s in segments
        ]
        return Response("".join(lines), media_type="text/x-rttm; charset=utf-8")
    speakers = []
    for speaker in result.get("speakers", []):
        entry = {"speaker": speaker["speaker"], "duration": speaker["duration"]}
        if include_embeddings:
            entry["embedding"] = _floats(speaker.get("embedding"))
        speakers.append(entry)
    body = {
        "model": model.id,
        "duration": result["duration"],
        "num_speakers": result["num_speakers"],
        "segments": segments,
        "speakers": speakers,
    }
    return Response(orjson.dumps(body), media_type="application/json")
