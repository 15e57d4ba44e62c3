"""``POST /v1/images/captions`` (native): describe an uploaded image in words."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.errors import InvalidRequest

router = APIRouter(tags=["images"])

TASK = "image-captioning"


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value)


@router.post(
    "/v1/images/captions",
    summary="Caption an image (native): multipart 'file', 'model', optional 'prompt' and 'max_tokens'",
    responses=error_responses(400, 404, 413, 415, 429, 502, 503, 504),
)
async def create_caption(request: Request, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the image as multipart/form-data with a 'file' field", param="file")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("the 'file' field (an image) is required", param="file", code="missing_file")
    model_id = _field(form, "model")
    if not model_id:
        raise InvalidRequest("the 'model' field is required", param="model")
    payload: dict[str, Any] = {"prompt": _field(form, "prompt") or None}
    max_tokens = _field(form, "max_tokens")
    if max_tokens is not None:
        try:
            payload["max_tokens"] = int(max_tokens)
        except ValueError:
            raise InvalidRequest("max_tokens must be an integer", param="max_tokens") from None
        if not 1 <= payload["max_tokens"] <= 512:
            raise InvalidRequest("max_tokens must be between 1 and 512", param="max_tokens")
    model = catalog.get_for_task_or_raise(TASK, model_id)
    raw = await upload.read()
    if not raw:
        raise InvalidRequest("the uploaded image is empty", param="file", code="invalid_image")
    files = {"file": (upload.filename or "image", raw, upload.content_type or "application/octet-stream")}
    result = await coordinator.infer(model, payload, files=files)
    prompt, completion = int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0))
    body = {
        "model": model.id,
        "caption": result["caption"],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return Response(orjson.dumps(body), media_type="application/json")
