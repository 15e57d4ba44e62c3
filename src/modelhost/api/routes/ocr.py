"""``POST /v1/ocr`` (native): text and line boxes from an image or a PDF.

The upload travels to the worker as multipart bytes; decoding, validation (format, dimensions, page count) and
PDF rendering happen there, so the serve process never touches image libraries.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import UPLOAD_ERRORS, error_responses
from modelhost.api.uploads import UploadField, multipart_form, upload_files
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.schemas.ocr import OcrRequest, OcrResult

router = APIRouter(tags=["ocr"])


class OcrForm(OcrRequest):
    file: UploadField


@router.post(
    "/v1/ocr",
    summary="Recognize text in an image or PDF (native): PNG, JPEG, WebP, TIFF, BMP or PDF",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def recognize_text(
    form: Annotated[OcrForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, "ocr", form.model)
    result = OcrResult.model_validate(await coordinator.infer(model, form.model_dump(exclude={"file"}), files=files))
    body = {"model": model.id, **result.model_dump()}
    return Response(orjson.dumps(body), media_type="application/json")
