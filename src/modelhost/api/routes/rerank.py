"""``POST /v1/rerank`` (native, in the Cohere / Jina / Infinity shape): documents ordered by relevance to a query."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import INFERENCE_ERRORS, error_responses
from modelhost.catalog.aliases import resolve_model_or_raise
from modelhost.schemas.rerank import RerankRequest, RerankResult

router = APIRouter(tags=["rerank"])


@router.post(
    "/v1/rerank",
    summary="Rerank documents by relevance to a query (Cohere/Jina-compatible shape)",
    responses=error_responses(*INFERENCE_ERRORS),
)
async def rerank(request: RerankRequest, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    texts = request.texts
    model = resolve_model_or_raise(catalog, "rerank", request.model)
    result = RerankResult.model_validate(await coordinator.infer(model, request.model_dump()))
    scores = result.scores
    if len(scores) != len(texts):
        raise RuntimeError(f"model {model.id} returned {len(scores)} scores for {len(texts)} documents")
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
    if request.top_n is not None:
        order = order[: request.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if request.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    tokens = result.tokens
    body = {
        "model": model.id,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(body), media_type="application/json")
