"""``POST /v1/jobs/presentation-video``: start a presentation-video job (202 + Location).

What can be seen at submission is answered at once: not a .pptx (415), a password-protected or legacy deck, a
corrupt one or one without slides (400), too big or too many slides (413), an unknown model or reference voice
(404). The rest (LibreOffice cannot render it, TTS fails) ends the job as ``failed`` with a clear ``error``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from modelhost.api.deps import CatalogDep, JobsDep, ServicesDep
from modelhost.api.errors import error_responses
from modelhost.api.routes.jobs import job_accepted
from modelhost.api.routes.meetings import upload_input
from modelhost.api.routes.voices import reference_voice_or_raise
from modelhost.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from modelhost.jobs import inference
from modelhost.jobs.presentation import KIND
from modelhost.media.slides import DeckError, check_pptx_bytes, read_deck_stream
from modelhost.schemas.jobs import JobView
from modelhost.schemas.presentation import PresentationParams

router = APIRouter(tags=["jobs"])


def _check_deck(stream: BinaryIO, max_slides: int) -> None:
    stream.seek(0)
    head = stream.read(8)
    stream.seek(0)
    try:
        check_pptx_bytes(head)
    except DeckError as exc:
        if exc.code == "invalid_presentation":
            raise UnsupportedMediaType(exc.message, param="file", code=exc.code) from None
        raise InvalidRequest(exc.message, param="file", code=exc.code) from None
    try:
        read_deck_stream(stream, max_slides)
    except DeckError as exc:
        if exc.code == "too_many_slides":
            raise PayloadTooLarge(exc.message, param="file", code=exc.code) from None
        raise InvalidRequest(exc.message, param="file", code=exc.code) from None
    finally:
        stream.seek(0)


@router.post(
    "/v1/jobs/presentation-video",
    summary="Turn a .pptx whose speaker notes are the script into a narrated MP4 (a job: 202, then poll or follow)",
    status_code=202,
    response_model=JobView,
    responses=error_responses(400, 404, 413, 415, 503, 507),
)
async def create_presentation_video(
    jobs: JobsDep,
    catalog: CatalogDep,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="the deck (.pptx); its speaker notes are read aloud")],
    voice_sample: Annotated[
        UploadFile | None, File(description="optional reference recording: the narration is spoken in that voice")
    ] = None,
    model: Annotated[str, Form(description="text-to-speech model")] = "hibari",
    voice: Annotated[str | None, Form(description="a voice of the TTS model")] = None,
    silence_seconds: Annotated[float, Form(description="length of a silent slide")] = 1.0,
    width: Annotated[int | None, Form(description="video width in pixels")] = None,
    height: Annotated[int | None, Form(description="video height in pixels")] = None,
    reference_voice: Annotated[str | None, Form(description="a voice registered with POST /v1/audio/voices")] = None,
    voice_conversion_model: Annotated[str, Form(description="voice-conversion model")] = "world-vc",
) -> JSONResponse:
    settings = services.settings
    try:
        params = PresentationParams(
            model=model,
            voice=voice or None,
            silence_seconds=silence_seconds,
            width=width,
            height=height,
            reference_voice=reference_voice or None,
            voice_conversion_model=voice_conversion_model,
            max_slides=settings.presentation_max_slides,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InvalidRequest(str(first.get("msg", "invalid value")), param=param) from None
    if file.size is not None and file.size > settings.presentation_max_bytes:
        raise PayloadTooLarge(
            f"the deck is {file.size} bytes; the limit is {settings.presentation_max_bytes} (presentation_max_bytes)",
            param="file",
        )
    catalog.get_for_task_or_raise(inference.TTS_TASK, params.model)
    inputs = {"file": upload_input(file, "file")}
    if voice_sample is not None and (voice_sample.size or voice_sample.filename):
        inputs["voice_sample"] = upload_input(voice_sample, "voice_sample")
    if params.reference_voice:
        reference_voice_or_raise(settings, params.reference_voice)
    if "voice_sample" in inputs or params.reference_voice:
        catalog.get_for_task_or_raise(inference.VOICE_CONVERSION_TASK, params.voice_conversion_model)
    await asyncio.to_thread(_check_deck, file.file, settings.presentation_max_slides)
    job = await jobs.create(KIND, params.model_dump(), inputs=inputs)
    return job_accepted(job)
