"""``POST /v1/images/captions`` (native): describe an uploaded image in words."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import UPLOAD_ERRORS, error_responses
from modelhost.api.uploads import UploadField, multipart_form, upload_files
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.schemas.image_captioning import CaptionRequest, CaptionResult

router = APIRouter(tags=["images"])

TASK = "image-captioning"


class CaptionForm(CaptionRequest):
    file: UploadField


@router.post(
    "/v1/images/captions",
    summary="Caption an image (native): PNG, JPEG, WebP, TIFF, BMP, or the first page of a PDF",
    responses=error_responses(*UPLOAD_ERRORS),
)
async def create_caption(
    form: Annotated[CaptionForm, multipart_form()], catalog: CatalogDep, coordinator: CoordinatorDep
) -> Response:
    files = await upload_files(form.file)
    model = resolve_model_or_raise(catalog, TASK, form.model)
    payload = form.model_dump(exclude={"file"})
    result = CaptionResult.model_validate(await coordinator.infer(model, payload, files=files))
    prompt, completion = result.prompt_tokens, result.completion_tokens
    body = {
        "model": model.id,
        "caption": result.caption,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return Response(orjson.dumps(body), media_type="application/json")
