"""Reading multipart uploads (audio, images, PDFs) for routes that hand a file to a worker.

The upload's spooled file object goes to the coordinator untouched (``coordinator.infer(files=...)``), which copies it
to a private temporary file and hands the worker its path; it is never read whole into memory here, and decoding
happens in the worker. Every problem with the form itself is an ``InvalidRequest`` (400) naming the field.
"""

from __future__ import annotations

import os
from typing import IO

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from modelhost.errors import InvalidRequest

Files = dict[str, IO[bytes]]


async def read_upload_form(request: Request, what: str) -> tuple[FormData, Files]:
    """The form and its ``file`` part (``what`` names the expected content in errors, e.g. "an audio file")."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(f"send {what} as multipart/form-data with a 'file' field", param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(f"the 'file' field ({what}) is required", param="file", code="missing_file")
    return form, {"file": upload.file}


def is_empty(file: IO[bytes]) -> bool:
    """Whether an upload's file holds no bytes (without reading it)."""
    position = file.tell()
    try:
        return file.seek(0, os.SEEK_END) == 0
    finally:
        file.seek(position)


def form_text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value)


def form_int(form: FormData, name: str, low: int, high: int) -> int | None:
    text = form_text(form, name)
    if text is None or not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
    return value


def form_float(form: FormData, name: str) -> float | None:
    text = form_text(form, name)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number", param=name) from None


def form_flag(form: FormData, name: str) -> bool:
    return (form_text(form, name) or "false").strip().lower() in ("1", "true", "yes", "on")
