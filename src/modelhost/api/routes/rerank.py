"""``POST /v1/rerank`` (native, in the Cohere / Jina / Infinity shape): documents ordered by relevance to a query."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from modelhost.api.deps import CatalogDep, CoordinatorDep
from modelhost.api.errors import error_responses
from modelhost.errors import InvalidRequest

router = APIRouter(tags=["rerank"])

DEFAULT_RERANK_MODEL = "minilm-rerank"
MAX_DOCUMENTS = 1000
MAX_CHARS = 100_000


class RerankDocument(BaseModel):
    text: str


class RerankRequest(BaseModel):
    model: str = Field(DEFAULT_RERANK_MODEL, description="a rerank model id (GET /v1/models?task=rerank)")
    query: str = Field(description="the search query")
    documents: list[str | RerankDocument] = Field(
        description=f"the texts to rank: strings (or {{'text': ...}} objects), at most {MAX_DOCUMENTS}"
    )
    top_n: int | None = Field(None, description="return only the best N (default: all)")
    return_documents: bool = Field(False, description="include each document's text in the results")


def _texts(request: RerankRequest) -> list[str]:
    if not request.query.strip():
        raise InvalidRequest("'query' must not be blank", param="query", code="empty_input")
    if len(request.query) > MAX_CHARS:
        raise InvalidRequest(f"'query' has more than {MAX_CHARS} characters", param="query", code="input_too_long")
    if not request.documents:
        raise InvalidRequest("'documents' must not be empty", param="documents", code="empty_input")
    if len(request.documents) > MAX_DOCUMENTS:
        raise InvalidRequest(
            f"'documents' has {len(request.documents)} items; at most {MAX_DOCUMENTS} per request",
            param="documents",
            code="too_many_inputs",
        )
    if request.top_n is not None and request.top_n < 1:
        raise InvalidRequest("'top_n' must be at least 1", param="top_n")
    texts = [d if isinstance(d, str) else d.text for d in request.documents]
    for i, text in enumerate(texts):
        if len(text) > MAX_CHARS:
            raise InvalidRequest(
                f"documents[{i}] has {len(text)} characters; at most {MAX_CHARS}",
                param="documents",
                code="input_too_long",
            )
    return texts


@router.post(
    "/v1/rerank",
    summary="Rerank documents by relevance to a query (Cohere/Jina-compatible shape)",
    responses=error_responses(400, 404, 422, 429, 502, 503, 504),
)
async def rerank(request: RerankRequest, catalog: CatalogDep, coordinator: CoordinatorDep) -> Response:
    texts = _texts(request)
    model = catalog.get_for_task_or_raise("rerank", request.model)
    result = await coordinator.infer(model, {"query": request.query, "documents": texts})
    scores = [float(s) for s in result["scores"]]
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
    tokens = int(result.get("tokens", 0))
    body = {
        "model": model.id,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(body), media_type="application/json")
