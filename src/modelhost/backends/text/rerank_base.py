"""Shared logic of reranking backends.

Request: ``modelhost.schemas.rerank.RerankRequest``. Result: ``RerankResult`` — one score per document, in input
order, and the tokens read. The API process sorts, cuts to ``top_n`` and attaches the documents.
"""

from __future__ import annotations

from modelhost.backends.base import Backend, Files
from modelhost.schemas.rerank import RerankRequest, RerankResult


class RerankBackend(Backend[RerankRequest]):
    request_type = RerankRequest

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """One relevance score per document (higher is more relevant) and the tokens read."""
        raise NotImplementedError

    def infer(self, request: RerankRequest, files: Files) -> RerankResult:
        scores, tokens = self.score(request.query, request.texts)
        return RerankResult(scores=[float(s) for s in scores], tokens=int(tokens))
