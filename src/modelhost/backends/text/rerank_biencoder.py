"""Reranking by bi-encoder cosine similarity with a sentence-transformers embedding model.

Query and documents are embedded separately and scored by cosine similarity (``relevance_score`` in -1..1).
Source: any sentence-transformers model (default built-in: the packaged all-MiniLM-L6-v2). Options: those of the
sentence-transformers embeddings backend (``batch_size``, ``trust_remote_code``), plus ``query_prefix`` and
``document_prefix`` for models trained with instructions (e5: ``"query: "`` / ``"passage: "``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from modelhost.backends.text.embeddings_sentence_transformers import SentenceTransformersEmbeddings
from modelhost.backends.text.rerank_base import RerankBackend


class BiEncoderReranker(RerankBackend):
    # it loads its models with SentenceTransformersEmbeddings: the same libraries, the same zygote preload
    requires = SentenceTransformersEmbeddings.requires
    extra = SentenceTransformersEmbeddings.extra
    zygote_preload = SentenceTransformersEmbeddings.zygote_preload
    supports_batching: ClassVar[bool] = False

    def load(self) -> None:
        self.encoder = SentenceTransformersEmbeddings(self.spec)
        self.encoder.load()
        self.query_prefix = str(self.options.get("query_prefix", ""))
        self.document_prefix = str(self.options.get("document_prefix", ""))

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        import numpy as np

        texts = [self.query_prefix + query] + [self.document_prefix + d for d in documents]
        vectors, tokens = self.encoder.encode(texts)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        unit = vectors / norms
        scores = unit[1:] @ unit[0]
        return [float(s) for s in scores], sum(tokens)

    def info(self) -> dict[str, Any]:
        return {**self.encoder.info(), "scoring": "cosine"}
