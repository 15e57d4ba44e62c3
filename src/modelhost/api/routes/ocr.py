"""``POST /v1/ocr`` (native): text and line boxes from an image or a PDF.

The upload travels to the worker as multipart bytes; decoding, validation (format, dimensions, page count) and
PDF rendering happen there, so the serve process never touches image libraries.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.errors import InvalidRequest

router = APIRouter(tags=["ocr"])

DEFAULT_OCR_MODEL = "rapidocr"


@router.post(
    "/v1/ocr",
    summary="Recognize text in an image or PDF (native): multipart 'file' (PNG, JPEG, WebP, TIFF, BMP, PDF), "
    "optional 'model'",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def recognize_text(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest("send the image or PDF as multipart/form-data with a 'file' field", param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("the 'file' field (an image or a PDF) is required", param="file", code="missing_file")
    model_field = form.get("model")
    model_id = model_field if isinstance(model_field, str) and model_field else DEFAULT_OCR_MODEL
    model = catalog.get_for_task_or_raise("ocr", model_id)
    raw = await upload.read()
    if not raw:
        raise InvalidRequest("the uploaded file is empty", param="file", code="empty_file")
    files = {"file": (upload.filename or "image", raw, upload.content_type or "application/octet-stream")}
    result = await coordinator.infer(model, {}, files=files)
    body = {"model": model.id, "text": result["text"], "pages": result["pages"]}
    return Response(orjson.dumps(body), media_type="application/json")
