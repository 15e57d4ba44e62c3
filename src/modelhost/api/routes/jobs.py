"""Jobs: list, read, follow (server-sent events), download artifacts (with Range), cancel, delete.

Routes that create a job (``POST /v1/jobs/<kind>``, ``POST /v1/speakers``) answer with ``job_accepted(job)``:
202, the job, and ``Location: /v1/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from modelhost.api.deps import JobsDep
from modelhost.api.errors import error_responses
from modelhost.errors import NotFound, RangeNotSatisfiable
from modelhost.schemas.jobs import JobPage, JobStatus, JobView

if TYPE_CHECKING:
    from modelhost.jobs.service import JobService
    from modelhost.storage.blobs import BlobStore

log = logging.getLogger(__name__)

router = APIRouter(tags=["jobs"])

CHUNK = 256 * 1024
#: A 206's range is read in pieces of this size (one ranged GET each on S3).
RANGE_PIECE = 8 * 1024 * 1024


def job_accepted(job: JobView) -> JSONResponse:
    """The answer of a route that created a job: 202, the job, and ``Location: /v1/jobs/{id}``."""
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs", summary="List jobs, newest first", response_model=JobPage, responses=error_responses(400))
async def list_jobs(
    jobs: JobsDep,
    kind: Annotated[str | None, Query(description="only jobs of this kind")] = None,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobPage:
    return await asyncio.to_thread(jobs.page, kind, status, limit, offset)


@router.get("/v1/jobs/{job_id}", summary="A job", response_model=JobView, responses=error_responses(404))
async def get_job(job_id: str, jobs: JobsDep) -> JobView:
    return await asyncio.to_thread(jobs.get, job_id)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    summary="Cancel a pending or running job",
    response_model=JobView,
    responses=error_responses(404, 409),
)
async def cancel_job(job_id: str, jobs: JobsDep) -> JobView:
    return await jobs.cancel(job_id)


@router.delete(
    "/v1/jobs/{job_id}",
    summary="Delete a job and its artifacts (a running job is cancelled first)",
    status_code=204,
    responses=error_responses(404),
)
async def delete_job(job_id: str, jobs: JobsDep) -> Response:
    await jobs.delete(job_id)
    return Response(status_code=204)


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Server-sent events of every status, stage and progress change until the job ends",
    response_class=StreamingResponse,
    responses=error_responses(404),
)
async def job_events(job_id: str, jobs: JobsDep, request: Request) -> StreamingResponse:
    events = jobs.events(job_id)

    async def stream() -> AsyncIterator[bytes]:
        number = 0
        try:
            async for kind, event in events:
                if kind == "keepalive":
                    yield b": keep-alive\n\n"
                    continue
                number += 1
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (number, kind.encode(), orjson.dumps(event.model_dump()))
                if await request.is_disconnected():
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range → (first, last) inclusive; None to send everything (unparseable or several ranges,
    which RFC 9110 lets a server ignore); 416 when it lies outside the file."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            raise RangeNotSatisfiable(f"empty suffix range in {header!r}", headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or first > last:
        raise RangeNotSatisfiable(
            f"range {header!r} is outside the {size} bytes of the artifact",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return first, last


def none_match(header: str, etag: str) -> bool:
    """RFC 9110 ``If-None-Match`` on a GET: true when one of its entity tags is ``*`` or equals ``etag`` by weak
    comparison (``W/"x"`` matches ``"x"``)."""
    tags = (tag.strip() for tag in header.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def range_applies(header: str | None, etag: str) -> bool:
    """RFC 9110 ``If-Range``: absent, or an entity tag equal to ``etag`` by strong comparison (a weak tag never
    is). A date would be compared with ``Last-Modified``, which artifacts do not send: false, like anything else."""
    return header is None or header.strip() == etag


#: Reads of an artifact's row and blob: a blob gone between the two may be a version replaced meanwhile.
ARTIFACT_READS = 3


@router.get(
    "/v1/jobs/{job_id}/artifacts/{name}",
    summary="Download an artifact of a job (a single byte Range, If-Range, If-None-Match)",
    response_class=StreamingResponse,
    responses={
        **error_responses(404, 416, 507),
        206: {"description": "the requested byte range"},
        304: {"description": "If-None-Match names the current version (its ETag): no body"},
    },
)
async def get_artifact(job_id: str, name: str, jobs: JobsDep, request: Request) -> Response:
    """The bytes of the artifact's current version, whose SHA-256 is its (strong) ``ETag``. A version's blob is
    never rewritten (``StepContext.put_artifact``), so what is served is always the version whose ``ETag`` and size
    the answer carries; a version replaced while its download runs is deleted, which cuts that download short
    (fewer bytes than ``Content-Length``): resumed with ``If-Range``, it gets the new version whole."""
    blobs = jobs.deps.blobs
    wanted = request.headers.get("range")
    for attempt in range(ARTIFACT_READS):
        artifact = await asyncio.to_thread(jobs.artifact, job_id, name)
        key, size, etag = artifact.blob_key, artifact.size, f'"{artifact.sha256}"'
        headers: dict[str, Any] = {"Accept-Ranges": "bytes", "ETag": etag}
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and none_match(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        span = None
        if wanted and size and range_applies(request.headers.get("if-range"), etag):
            span = parse_range(wanted, size)
        try:
            if span is None:
                status, first, last = 200, 0, size - 1
                body = await _whole(blobs, key, size)
            else:  # only the range is read (pieces of RANGE_PIECE: one ranged GET each on S3), not the whole blob
                status, (first, last) = 206, span
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
                body = await _part(blobs, key, first, last)
        except KeyError:
            if attempt + 1 < ARTIFACT_READS and await asyncio.to_thread(_replaced, jobs, job_id, name, key):
                continue  # a new version replaced this one after its row was read: serve that one
            raise NotFound(f"the blob of artifact {name!r} is missing", code="artifact_missing") from None
        headers["Content-Length"] = str(last - first + 1 if size else 0)
        return StreamingResponse(body, status_code=status, media_type=artifact.media_type, headers=headers)
    raise AssertionError("unreachable")


def _replaced(jobs: JobService, job_id: str, name: str, key: str) -> bool:
    """Whether the artifact's row names another blob than ``key`` now (a 404 when the artifact itself is gone)."""
    return jobs.artifact(job_id, name).blob_key != key


async def _whole(blobs: BlobStore, key: str, size: int) -> AsyncIterator[bytes]:
    """The blob opened now (``KeyError`` when missing), its bytes streamed by the returned iterator."""
    stream: BinaryIO = await asyncio.to_thread(blobs.open, key)

    async def body() -> AsyncIterator[bytes]:
        try:
            left = size
            while left > 0:
                chunk = await asyncio.to_thread(stream.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            stream.close()

    return body()


async def _part(blobs: BlobStore, key: str, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes ``first..last`` of the blob: the first piece read now (``KeyError`` when missing: a 404, not a broken
    206), the rest by the returned iterator."""
    head = await asyncio.to_thread(blobs.read_range, key, first, min(RANGE_PIECE, last - first + 1))

    async def body() -> AsyncIterator[bytes]:
        piece, position = head, first
        while piece:
            yield piece
            position += len(piece)
            if position > last:
                break
            try:
                piece = await asyncio.to_thread(blobs.read_range, key, position, min(RANGE_PIECE, last - position + 1))
            except KeyError:
                log.warning("artifact blob %s went away during a download (a newer version, or a deleted job)", key)
                raise

    return body()
