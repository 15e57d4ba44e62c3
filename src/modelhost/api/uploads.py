"""Uploaded files (audio, images, PDFs) on their way to a worker: the one place that handles them.

Routes declare the file as ``file: UploadField`` and hand it over with ``upload_files``: the upload's spooled file
object (Starlette spools large parts to disk) goes to the coordinator untouched (``coordinator.infer(files=...)``),
which copies it to a private temporary file and hands the worker its path; it is never read whole into memory in
the serve process, and decoding happens in the worker. A zero-byte upload is refused here, on every route, with
400 ``empty_file``; a missing one is 400 ``missing_file`` (the validation handler).
"""

from __future__ import annotations

import os
from typing import IO, Annotated, Any

from fastapi import File, Form, UploadFile

from modelhost.errors import InvalidRequest

#: The ``file`` part of a multipart form (the field name OpenAI's API uses).
UploadField = Annotated[UploadFile, File(description="the file to process (multipart/form-data)")]


def multipart_form() -> Any:
    """``Annotated[SomeForm, multipart_form()]``: a form model (the task's schema plus ``file: UploadField``) read
    from multipart/form-data, documented field by field in the OpenAPI document."""
    return Form(media_type="multipart/form-data")


async def upload_files(upload: UploadFile, *, field: str = "file") -> dict[str, IO[bytes]]:
    """The upload as the coordinator's ``files`` argument (its spooled file object, not its bytes); 400
    ``empty_file`` when it holds no byte."""
    if is_empty(upload.file):
        raise InvalidRequest(f"the uploaded {field!r} is empty", param=field, code="empty_file")
    upload.file.seek(0)
    return {field: upload.file}


def is_empty(file: IO[bytes]) -> bool:
    """Whether an upload's file holds no bytes (without reading it)."""
    position = file.tell()
    try:
        return file.seek(0, os.SEEK_END) == 0
    finally:
        file.seek(position)
