"""Shared logic of text-embedding backends: cross-request batching, ``dimensions``, output packing.

Request: ``modelhost.schemas.embeddings.EmbeddingRequest``. Result: ``EmbeddingResult`` — bytes of little-endian
float32 rows (a binary frame, never base64), so the API process never parses or formats numbers it only forwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from modelhost.backends.base import Backend, Files
from modelhost.errors import BadInput
from modelhost.schemas.embeddings import EmbeddingRequest, EmbeddingResult

if TYPE_CHECKING:
    import numpy as np


class EmbeddingBackend(Backend[EmbeddingRequest]):
    request_type = EmbeddingRequest
    supports_batching: ClassVar[bool] = True
    #: Rows encoded per forward pass, sorted by length as sentence-transformers does.
    encode_batch_size: int = 32

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalised float32 embeddings ``[len(texts), dimension]`` and the token count of each text."""
        raise NotImplementedError

    def infer(self, request: EmbeddingRequest, files: Files) -> EmbeddingResult:
        return self.infer_batch([request])[0]

    def infer_batch(self, requests: list[EmbeddingRequest]) -> list[EmbeddingResult]:
        return [
            EmbeddingResult(embeddings=data, count=count, dim=dim, prompt_tokens=tokens)
            for data, count, dim, tokens in self._encode_requests(requests)
        ]

    def run_batch(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What ``Backend.run_batch`` returns (``EmbeddingResult.model_dump()`` of each result), without building
        and dumping a result model per request: the worker's per-request path. A subclass that overrides
        ``infer_batch`` gets the generic path, through its own ``infer_batch``."""
        if type(self).infer_batch is not EmbeddingBackend.infer_batch:
            return super().run_batch(payloads)
        return [
            {"embeddings": data, "count": count, "dim": dim, "prompt_tokens": tokens}
            for data, count, dim, tokens in self._encode_requests([self.parse(payload) for payload in payloads])
        ]

    def _encode_requests(self, requests: list[EmbeddingRequest]) -> list[tuple[bytes, int, int, int]]:
        """One ``encode`` for the texts of all ``requests``; per request: its rows as little-endian float32 bytes,
        the row count, the dimension and the tokens used."""
        import numpy as np

        for request in requests:
            self._check_dimensions(request.dimensions)
        batches = [request.texts for request in requests]
        vectors, tokens = self.encode([text for texts in batches for text in texts])
        results: list[tuple[bytes, int, int, int]] = []
        offset = 0
        for texts, request in zip(batches, requests, strict=True):
            rows = vectors[offset : offset + len(texts)]
            used = sum(tokens[offset : offset + len(texts)])
            offset += len(texts)
            if request.dimensions is not None and request.dimensions != rows.shape[1]:
                rows = rows[:, : request.dimensions]
                norms = np.linalg.norm(rows, axis=1, keepdims=True)
                rows = rows / np.maximum(norms, 1e-12)
            data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
            results.append((data, len(texts), int(rows.shape[1]), int(used)))
        return results

    def _check_dimensions(self, dimensions: int | None) -> None:
        """The rules on ``dimensions`` that need the loaded model (the request model checked it is positive)."""
        if dimensions is None:
            return
        if dimensions > self.dimension:
            raise BadInput(
                f"'dimensions' is {dimensions} but model {self.spec.model_id} has {self.dimension}",
                param="dimensions",
            )
        if dimensions != self.dimension and not self.options.get("matryoshka", False):
            raise BadInput(
                f"model {self.spec.model_id} produces {self.dimension}-dimension embeddings and was not trained "
                "to be truncated; omit 'dimensions' or set the model option matryoshka=true",
                param="dimensions",
            )

    def info(self) -> dict[str, Any]:
        return {"dimension": self.dimension}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
