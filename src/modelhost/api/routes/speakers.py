"""Speakers: enroll (a job), list, read, update, delete, add samples, identify a voice."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from modelhost.api.deps import CatalogDep, JobsDep, RuntimeDep, ServicesDep, SpeakersDep
from modelhost.api.errors import error_responses
from modelhost.api.routes.jobs import job_accepted
from modelhost.api.routes.meetings import upload_input
from modelhost.api.uploads import upload_files
from modelhost.errors import Conflict, InvalidRequest
from modelhost.jobs import inference
from modelhost.jobs.service import JobInput
from modelhost.schemas.jobs import JobView
from modelhost.schemas.speakers import (
    IdentifyResult,
    SpeakerMatch,
    SpeakerMetadata,
    SpeakerPage,
    SpeakerPatch,
    SpeakerView,
)
from modelhost.speakers.enrollment import KIND as ENROLLMENT

router = APIRouter(tags=["speakers"])

MAX_SAMPLES = 32


def _metadata(text: str) -> SpeakerMetadata:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidRequest("metadata must be a JSON object", param="metadata", code="invalid_metadata") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("metadata must be a JSON object", param="metadata", code="invalid_metadata")
    try:
        return SpeakerMetadata.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(["metadata", *(str(p) for p in first.get("loc", ()))])
        raise InvalidRequest(f"{param}: {first.get('msg')}", param=param, code="invalid_metadata") from None


def _samples(files: list[UploadFile]) -> dict[str, JobInput]:
    if not files:
        raise InvalidRequest("send at least one audio sample in 'files'", param="files", code="missing_file")
    if len(files) > MAX_SAMPLES:
        raise InvalidRequest(f"at most {MAX_SAMPLES} samples per request", param="files")
    return {f"sample-{i}": upload_input(upload, "files") for i, upload in enumerate(files)}


@router.post(
    "/v1/speakers",
    summary="Enroll a speaker from voice samples (a job: 202; 409 when external_id is taken)",
    status_code=202,
    response_model=JobView,
    responses=error_responses(400, 404, 409, 413, 415, 503, 507),
)
async def enroll_speaker(
    speakers: SpeakersDep,
    jobs: JobsDep,
    catalog: CatalogDep,
    files: Annotated[list[UploadFile], File(description="one or more voice samples (any audio ffmpeg decodes)")],
    metadata: Annotated[str, Form(description='JSON: {"external_id": …, "name": …, any other fields}')],
    model: Annotated[str, Form(description="speaker-embedding model")] = inference.DEFAULT_SPEAKER_MODEL,
) -> JSONResponse:
    meta = _metadata(metadata)
    samples = _samples(files)
    entry = catalog.get_for_task_or_raise(inference.SPEAKER_EMBEDDING_TASK, model)
    fields: dict[str, Any] = meta.model_dump()
    await asyncio.to_thread(speakers.reserve, meta.external_id, meta.name, fields, entry.id)
    try:
        job = await jobs.create(ENROLLMENT, {"external_id": meta.external_id, "model": entry.id}, inputs=samples)
    except BaseException:
        await asyncio.to_thread(speakers.delete, meta.external_id)
        raise
    await asyncio.to_thread(speakers.set_job, meta.external_id, job.id)
    return job_accepted(job)


@router.get("/v1/speakers", summary="Enrolled speakers", response_model=SpeakerPage, responses=error_responses(400))
async def list_speakers(
    speakers: SpeakersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> SpeakerPage:
    return await asyncio.to_thread(speakers.page, limit, offset)


@router.post(
    "/v1/speakers/identify",
    summary="Who is speaking: the enrolled speakers closest to the voice in an audio file",
    response_model=IdentifyResult,
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504, 507),
)
async def identify_speaker(
    services: ServicesDep,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="speech of one person (any audio ffmpeg decodes)")],
    model: Annotated[str, Form(description="speaker-embedding model")] = inference.DEFAULT_SPEAKER_MODEL,
    limit: Annotated[int, Form(ge=1, le=100)] = 5,
) -> IdentifyResult:
    audio = (await upload_files(file))["file"]  # the spooled upload, never read whole here; 400 when empty
    voiceprint = await inference.embed_speaker(services, audio, model=model)
    threshold = runtime.current.speaker_identify_threshold
    matches: list[SpeakerMatch] = []
    if voiceprint.vector is not None:
        found = await asyncio.to_thread(services.speakers.search, voiceprint.model, voiceprint.vector, limit)
        matches = [SpeakerMatch(external_id=m.external_id, name=m.name, score=m.score) for m in found]
    best = matches[0] if matches and matches[0].score >= threshold else None
    return IdentifyResult(model=voiceprint.model, matches=matches, speaker=best, threshold=threshold)


@router.get(
    "/v1/speakers/{external_id}",
    summary="An enrolled speaker",
    response_model=SpeakerView,
    responses=error_responses(404),
)
async def get_speaker(external_id: str, speakers: SpeakersDep) -> SpeakerView:
    return await asyncio.to_thread(speakers.get_or_raise, external_id)


@router.patch(
    "/v1/speakers/{external_id}",
    summary="Change a speaker's name or metadata fields (merged)",
    response_model=SpeakerView,
    responses=error_responses(400, 404),
)
async def update_speaker(external_id: str, patch: SpeakerPatch, speakers: SpeakersDep) -> SpeakerView:
    fields = {k: v for k, v in (patch.model_extra or {}).items() if k != "external_id"}
    return await asyncio.to_thread(speakers.update, external_id, patch.name, fields)


@router.delete(
    "/v1/speakers/{external_id}",
    summary="Delete a speaker and its voiceprint",
    status_code=204,
    responses=error_responses(404),
)
async def delete_speaker(external_id: str, speakers: SpeakersDep, jobs: JobsDep) -> Response:
    speaker = await asyncio.to_thread(speakers.get_or_raise, external_id)
    if speaker.status == "pending" and speaker.job_id:
        with contextlib.suppress(Conflict):  # it ended meanwhile
            await jobs.cancel(speaker.job_id)
    await asyncio.to_thread(speakers.delete, external_id)
    return Response(status_code=204)


@router.post(
    "/v1/speakers/{external_id}/samples",
    summary="Add voice samples to an enrolled speaker and re-average its voiceprint (a job: 202)",
    status_code=202,
    response_model=JobView,
    responses=error_responses(400, 404, 409, 413, 415, 503, 507),
)
async def add_speaker_samples(
    external_id: str,
    speakers: SpeakersDep,
    jobs: JobsDep,
    files: Annotated[list[UploadFile], File(description="one or more voice samples")],
) -> JSONResponse:
    speaker = await asyncio.to_thread(speakers.get_or_raise, external_id)
    if speaker.status == "pending":
        raise Conflict(f"speaker {external_id!r} is still being enrolled", code="speaker_pending")
    samples = _samples(files)
    job = await jobs.create(ENROLLMENT, {"external_id": external_id, "model": speaker.model}, inputs=samples)
    await asyncio.to_thread(speakers.set_job, external_id, job.id, adding=True)
    return job_accepted(job)
