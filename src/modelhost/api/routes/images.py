"""``POST /v1/images/captions`` (native): describe an uploaded image in words."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.api.forms import form_int, form_text, is_empty, read_upload_form
from modelhost.errors import InvalidRequest

router = APIRouter(tags=["images"])

TASK = "image-captioning"


@router.post(
    "/v1/images/captions",
    summary="Caption an image (native): multipart 'file', 'model', optional 'prompt' and 'max_tokens'",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_caption(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    form, files = await read_upload_form(request, "an image")
    model_id = form_text(form, "model")
    if not model_id:
        raise InvalidRequest("the 'model' field is required", param="model")
    payload: dict[str, Any] = {"prompt": form_text(form, "prompt") or None}
    max_tokens = form_int(form, "max_tokens", 1, 512)
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    model = catalog.get_for_task_or_raise(TASK, model_id)
    if is_empty(files["file"]):
        raise InvalidRequest("the uploaded image is empty", param="file", code="invalid_image")
    result = await coordinator.infer(model, payload, files=files)
    prompt, completion = int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0))
    body = {
        "model": model.id,
        "caption": result["caption"],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return Response(orjson.dumps(body), media_type="application/json")
