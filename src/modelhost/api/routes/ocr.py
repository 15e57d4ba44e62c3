"""``POST /v1/ocr`` (native): text and line boxes from an image or a PDF.

The upload travels to the worker as multipart bytes; decoding, validation (format, dimensions, page count) and
PDF rendering happen there, so the serve process never touches image libraries.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.api.forms import form_text, is_empty, read_upload_form
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
    form, files = await read_upload_form(request, "an image or a PDF")
    model = catalog.get_for_task_or_raise("ocr", form_text(form, "model") or DEFAULT_OCR_MODEL)
    if is_empty(files["file"]):
        raise InvalidRequest("the uploaded file is empty", param="file", code="empty_file")
    result = await coordinator.infer(model, {}, files=files)
    body = {"model": model.id, "text": result["text"], "pages": result["pages"]}
    return Response(orjson.dumps(body), media_type="application/json")
