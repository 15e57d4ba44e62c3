"""Shared logic of reranking backends.

Payload: ``{"query": str, "documents": [str, ...]}``. Result: ``{"scores": [float per document, in input order],
"tokens": int}``. The API process sorts, cuts to ``top_n`` and attaches the documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.backends.base import Backend
from modelhost.worker.protocol import InvalidInput


class RerankBackend(Backend):
    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """One relevance score per document (higher is more relevant) and the tokens read."""
        raise NotImplementedError

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        query = payload.get("query")
        documents = payload.get("documents")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("'query' must be a non-empty string", param="query")
        if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
            raise InvalidInput("'documents' must be a non-empty list of strings", param="documents")
        scores, tokens = self.score(query, documents)
        return {"scores": [float(s) for s in scores], "tokens": int(tokens)}
