"""``POST /v1/jobs/meeting-transcription``: start a meeting-transcription job (202 + Location)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from modelhost.api.deps import CatalogDep, JobsDep
from modelhost.api.errors import error_responses
from modelhost.api.routes.jobs import job_accepted
from modelhost.errors import InvalidRequest
from modelhost.jobs.inference import ASR_TASK
from modelhost.jobs.meeting import KIND
from modelhost.jobs.service import JobInput
from modelhost.schemas.jobs import JobView, MeetingParams

router = APIRouter(tags=["jobs"])


def upload_input(upload: UploadFile, field: str) -> JobInput:
    """An uploaded file as a job input (its spooled file is copied into the blob store), 400 when empty."""
    if not upload.size and upload.size is not None:
        raise InvalidRequest(f"the {field!r} file is empty", param=field, code="empty_file")
    return JobInput(
        filename=upload.filename or "upload",
        data=upload.file,
        content_type=upload.content_type or "application/octet-stream",
    )


def params_or_raise(schema: type[MeetingParams], /, **values: object) -> MeetingParams:
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InvalidRequest(
            str(first.get("msg", "invalid value")).removeprefix("Value error, "), param=param
        ) from None


@router.post(
    "/v1/jobs/meeting-transcription",
    summary="Transcribe a meeting with speaker names (a job: 202, then poll, follow the events or wait)",
    status_code=202,
    response_model=JobView,
    responses=error_responses(400, 404, 413, 415, 503, 507),
)
async def create_meeting_transcription(
    jobs: JobsDep,
    catalog: CatalogDep,
    file: Annotated[UploadFile, File(description="the recording: any audio or video ffmpeg decodes")],
    model: Annotated[str, Form(description="speech-recognition model")] = "whisper-tiny.en",
    language: Annotated[str | None, Form(description="spoken language; detected when unset")] = None,
    num_speakers: Annotated[int | None, Form(ge=1, le=64)] = None,
    min_speakers: Annotated[int | None, Form(ge=1, le=64)] = None,
    max_speakers: Annotated[int | None, Form(ge=1, le=64)] = None,
    identify: Annotated[bool, Form(description="name speakers that match enrolled voiceprints")] = True,
) -> JSONResponse:
    params = params_or_raise(
        MeetingParams,
        model=model,
        language=language or None,
        num_speakers=num_speakers,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        identify=identify,
    )
    catalog.get_for_task_or_raise(ASR_TASK, params.model)
    job = await jobs.create(KIND, params.model_dump(), inputs={"file": upload_input(file, "file")})
    return job_accepted(job)
