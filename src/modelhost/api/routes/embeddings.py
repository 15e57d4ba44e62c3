"""``POST /v1/embeddings`` (OpenAI-compatible)."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

import orjson
from fastapi import APIRouter, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep, RuntimeDep
from modelhost.api.errors import INFERENCE_ERRORS, error_responses
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.errors import InvalidRequest
from modelhost.schemas.embeddings import EmbeddingRequest, EmbeddingResult

router = APIRouter(tags=["embeddings"])

_LITTLE_ENDIAN = sys.byteorder == "little"


def _check_limits(request: EmbeddingRequest, max_inputs: int, max_chars: int) -> None:
    """The runtime limits (settings that change while the server runs); the schema checked everything else."""
    texts = request.texts
    if len(texts) > max_inputs:
        raise InvalidRequest(
            f"'input' has {len(texts)} items; at most {max_inputs} per request (embeddings_max_inputs)",
            param="input",
            code="too_many_inputs",
        )
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise InvalidRequest(
                f"input[{i}] has {len(text)} characters; at most {max_chars} (embeddings_max_input_chars)",
                param="input",
                code="input_too_long",
            )


@router.post(
    "/v1/embeddings",
    summary="Create embeddings (OpenAI-compatible)",
    responses=error_responses(*INFERENCE_ERRORS),
)
async def create_embeddings(
    request: EmbeddingRequest, catalog: CatalogDep, coordinator: CoordinatorDep, runtime: RuntimeDep
) -> Response:
    settings = runtime.current
    _check_limits(request, settings.embeddings_max_inputs, settings.embeddings_max_input_chars)
    model = resolve_model_or_raise(catalog, "embeddings", request.model)
    result = EmbeddingResult.model_validate(await coordinator.infer(model, request.model_dump()))
    raw = base64.b64decode(result.embeddings)
    dim, count = result.dim, result.count
    row_bytes = dim * 4
    data: list[dict[str, Any]] = []
    if request.encoding_format == "base64":
        for i in range(count):
            chunk = raw[i * row_bytes : (i + 1) * row_bytes]
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(chunk).decode("ascii")})
    else:
        floats = array("f")
        floats.frombytes(raw)
        if not _LITTLE_ENDIAN:
            floats.byteswap()
        for i in range(count):
            data.append({"object": "embedding", "index": i, "embedding": floats[i * dim : (i + 1) * dim].tolist()})
    tokens = result.prompt_tokens
    body = {
        "object": "list",
        "data": data,
        "model": model.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(body), media_type="application/json")
