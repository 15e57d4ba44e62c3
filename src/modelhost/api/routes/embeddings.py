"""``POST /v1/embeddings`` (OpenAI-compatible)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from modelhost.api.deps import CatalogDep, CoordinatorDep, RuntimeDep
from modelhost.api.errors import error_responses
from modelhost.errors import InvalidRequest
from modelhost.media.vectors import float32_rows

router = APIRouter(tags=["embeddings"])


class EmbeddingRequest(BaseModel):
    model: str = Field(description="an embeddings model id (GET /v1/models)")
    input: str | list[str] | list[int] | list[list[int]] = Field(description="a string or a list of strings")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="truncate to this size (models marked matryoshka)")
    user: str | None = None


def _texts(request: EmbeddingRequest, max_inputs: int, max_chars: int) -> list[str]:
    items = [request.input] if isinstance(request.input, str) else request.input
    if not items:
        raise InvalidRequest("'input' must not be empty", param="input", code="empty_input")
    if not all(isinstance(item, str) for item in items):
        raise InvalidRequest(
            "token-id input is not supported: send text (a string or a list of strings)", param="input"
        )
    if len(items) > max_inputs:
        raise InvalidRequest(
            f"'input' has {len(items)} items; at most {max_inputs} per request (embeddings_max_inputs)",
            param="input",
            code="too_many_inputs",
        )
    texts: list[str] = items  # type: ignore[assignment]  # all items checked to be str above
    for i, text in enumerate(texts):
        if not text:
            raise InvalidRequest(f"input[{i}] is an empty string", param="input", code="empty_input")
        if len(text) > max_chars:
            raise InvalidRequest(
                f"input[{i}] has {len(text)} characters; at most {max_chars} (embeddings_max_input_chars)",
                param="input",
                code="input_too_long",
            )
    return texts


@router.post(
    "/v1/embeddings",
    summary="Create embeddings (OpenAI-compatible)",
    responses=error_responses(400, 404, 413, 422, 429, 502, 503, 504),
)
async def create_embeddings(
    request: EmbeddingRequest, catalog: CatalogDep, coordinator: CoordinatorDep, runtime: RuntimeDep
) -> Response:
    settings = runtime.current
    texts = _texts(request, settings.embeddings_max_inputs, settings.embeddings_max_input_chars)
    model = catalog.get_for_task_or_raise("embeddings", request.model)
    result = await coordinator.infer(model, {"input": texts, "dimensions": request.dimensions})
    raw: bytes = result["embeddings"]  # little-endian float32 rows, sent by the worker as a binary frame
    dim, count = int(result["dim"]), int(result["count"])
    row_bytes = dim * 4
    data: list[dict[str, Any]] = []
    if request.encoding_format == "base64":
        for i in range(count):
            chunk = raw[i * row_bytes : (i + 1) * row_bytes]
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(chunk).decode("ascii")})
    else:
        for i, row in enumerate(float32_rows(raw, count, dim)):
            data.append({"object": "embedding", "index": i, "embedding": row})
    tokens = int(result.get("prompt_tokens", 0))
    body = {
        "object": "list",
        "data": data,
        "model": model.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(body), media_type="application/json")
