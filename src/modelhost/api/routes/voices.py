"""Reference voices (native): register a short recording under a name once, then ask for speech in that voice.

* ``POST /v1/audio/voices`` — multipart ``name`` + ``file`` (any audio ffmpeg decodes, ≥ 1 s of speech) → 201.
* ``GET /v1/audio/voices`` · ``GET /v1/audio/voices/{name}`` · ``DELETE /v1/audio/voices/{name}``.
* ``POST /v1/audio/speech`` with ``"reference_voice": "<name>"`` (a native extension field): the text is
  synthesized by the TTS model, then re-voiced by a voice-conversion model (``voice_conversion_model``, default
  ``world-vc``); the answer comes in one piece instead of streamed.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Form, Response
from fastapi.responses import JSONResponse

from modelhost.api.deps import ServicesDep
from modelhost.api.errors import error_responses
from modelhost.api.uploads import UploadField, upload_files
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.catalog.store import Catalog
from modelhost.config import Settings
from modelhost.coordinator.coordinator import Coordinator
from modelhost.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from modelhost.media.audio import MEDIA_TYPES
from modelhost.media.voices import MAX_SAMPLE_BYTES, ReferenceVoice, VoiceStore
from modelhost.schemas.voice_conversion import VoiceConversionRequest, VoiceConversionResult

router = APIRouter(tags=["audio"])

DEFAULT_CONVERSION_MODEL = "world-vc"


def voice_store(settings: Settings) -> VoiceStore:
    return VoiceStore.under(settings.data_dir)


def _describe(voice: ReferenceVoice) -> dict[str, Any]:
    return {"object": "voice", "name": voice.name, "bytes": voice.bytes, "created_at": voice.created_at}


def reference_voice_or_raise(settings: Settings, name: str, param: str = "reference_voice") -> tuple[str, bytes, str]:
    reference = voice_store(settings).reference(name)
    if reference is None:
        raise NotFound(f"no reference voice named {name!r}: register it with POST /v1/audio/voices", param=param)
    return reference


@router.post(
    "/v1/audio/voices",
    status_code=201,
    summary="Register a reference voice (a short recording) under a name (native)",
    responses=error_responses(400, 409, 413, 507),
)
async def create_voice(
    name: Annotated[str, Form(description="the voice's name: 1-64 letters, digits, '_', '-', '.'")],
    file: UploadField,
    services: ServicesDep,
) -> JSONResponse:
    name = name.strip()
    if not VoiceStore.valid_name(name):
        raise InvalidRequest(
            "name must be 1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit",
            param="name",
        )
    spooled = (await upload_files(file))["file"]  # 400 empty_file when it holds no byte
    if spooled.seek(0, os.SEEK_END) > MAX_SAMPLE_BYTES:  # measured without reading it
        raise PayloadTooLarge(f"a reference recording may be at most {MAX_SAMPLE_BYTES} bytes", param="file")
    spooled.seek(0)
    data = await file.read()
    filename, content_type = file.filename or "upload", file.content_type or "application/octet-stream"
    try:
        voice = voice_store(services.settings).add(name, data, filename, content_type)
    except FileExistsError:
        raise Conflict(f"a reference voice named {name!r} exists already", param="name", code="voice_exists") from None
    return JSONResponse(_describe(voice), status_code=201)


@router.get("/v1/audio/voices", summary="List reference voices (native)")
async def list_voices(services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [_describe(v) for v in voice_store(services.settings).list()]}


@router.get("/v1/audio/voices/{name}", summary="One reference voice (native)", responses=error_responses(404))
async def get_voice(name: str, services: ServicesDep) -> dict[str, Any]:
    found = voice_store(services.settings).get(name)
    if found is None:
        raise NotFound(f"no reference voice named {name!r}", param="name")
    return _describe(found[0])


@router.delete("/v1/audio/voices/{name}", summary="Delete a reference voice (native)", responses=error_responses(404))
async def delete_voice(name: str, services: ServicesDep) -> dict[str, Any]:
    if not voice_store(services.settings).delete(name):
        raise NotFound(f"no reference voice named {name!r}", param="name")
    return {"object": "voice", "name": name, "deleted": True}


async def speech_in_reference_voice(
    payload: dict[str, Any],
    reference: tuple[str, bytes, str],
    conversion_model: str | None,
    tts_model: str,
    catalog: Catalog,
    coordinator: Coordinator,
) -> Response:
    """TTS (WAV) → voice conversion toward ``reference`` → the requested format, in one answer."""
    model = resolve_model_or_raise(catalog, "text-to-speech", tts_model)
    converter = catalog.get_for_task_or_raise("voice-conversion", conversion_model or DEFAULT_CONVERSION_MODEL)
    fmt = str(payload.get("response_format") or "mp3")
    spoken = await coordinator.infer(model, {**payload, "model": model.id, "response_format": "wav"})
    # Audio arrives as bytes (a binary frame); the coordinator spools bytes to a file for the converter.
    files = {"file": spoken["audio"], "reference": reference[1]}
    request = VoiceConversionRequest(model=converter.id, response_format=fmt)
    converted = VoiceConversionResult.model_validate(
        await coordinator.infer(converter, request.model_dump(), files=files)
    )
    return Response(converted.audio, media_type=MEDIA_TYPES[fmt])
