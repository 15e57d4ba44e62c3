"""Uploaded files (audio, images, PDFs) on their way to a worker: the one place that handles them.

Routes declare the file as ``file: UploadField`` and hand it over with ``upload_files``; the bytes go to the worker
untouched (``coordinator.infer(files=...)``) and are decoded there. A zero-byte upload is refused here, on every
route, with 400 ``empty_file``; a missing one is 400 ``missing_file`` (the validation handler).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import File, Form, UploadFile

from modelhost.coordinator.coordinator import Files
from modelhost.errors import InvalidRequest

#: The ``file`` part of a multipart form (the field name OpenAI's API uses).
UploadField = Annotated[UploadFile, File(description="the file to process (multipart/form-data)")]


def multipart_form() -> Any:
    """``Annotated[SomeForm, multipart_form()]``: a form model (the task's schema plus ``file: UploadField``) read
    from multipart/form-data, documented field by field in the OpenAPI document."""
    return Form(media_type="multipart/form-data")


async def upload_files(upload: UploadFile, *, field: str = "file") -> Files:
    """The upload as the coordinator's ``files`` argument; 400 ``empty_file`` when it holds no byte."""
    data = await upload.read()
    if not data:
        raise InvalidRequest(f"the uploaded {field!r} is empty", param=field, code="empty_file")
    return {field: (upload.filename or "upload", data, upload.content_type or "application/octet-stream")}
