"""Shared logic of text-embedding backends: payload checks, cross-request batching, output packing.

Payload: ``{"input": [str, ...], "dimensions": int | null}``.
Result: ``{"embeddings": bytes of little-endian float32 rows, "count", "dim", "prompt_tokens"}`` — raw
floats, so the API process never parses or formats numbers it only forwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from modelhost.backends.base import Backend
from modelhost.worker.protocol import InvalidInput

if TYPE_CHECKING:
    import numpy as np


class EmbeddingBackend(Backend):
    supports_batching: ClassVar[bool] = True
    #: Rows encoded per forward pass, sorted by length as sentence-transformers does.
    encode_batch_size: int = 32

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalised float32 embeddings ``[len(texts), dimension]`` and the token count of each text."""
        raise NotImplementedError

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        return self.infer_batch([payload])[0]

    def infer_batch(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import numpy as np

        parsed = [self._parse(payload) for payload in payloads]
        texts = [text for items, _ in parsed for text in items]
        vectors, tokens = self.encode(texts)
        results: list[dict[str, Any]] = []
        offset = 0
        for items, dimensions in parsed:
            rows = vectors[offset : offset + len(items)]
            used = sum(tokens[offset : offset + len(items)])
            offset += len(items)
            if dimensions is not None and dimensions != rows.shape[1]:
                rows = rows[:, :dimensions]
                norms = np.linalg.norm(rows, axis=1, keepdims=True)
                rows = rows / np.maximum(norms, 1e-12)
            data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
            results.append(
                {
                    "embeddings": data,
                    "count": len(items),
                    "dim": int(rows.shape[1]),
                    "prompt_tokens": int(used),
                }
            )
        return results

    def _parse(self, payload: dict[str, Any]) -> tuple[list[str], int | None]:
        items = payload.get("input")
        if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
            raise InvalidInput("'input' must be a non-empty list of strings", param="input")
        dimensions = payload.get("dimensions")
        if dimensions is not None:
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
                raise InvalidInput("'dimensions' must be a positive integer", param="dimensions")
            if dimensions > self.dimension:
                raise InvalidInput(
                    f"'dimensions' is {dimensions} but model {self.spec.model_id} has {self.dimension}",
                    param="dimensions",
                )
            if dimensions != self.dimension and not self.options.get("matryoshka", False):
                raise InvalidInput(
                    f"model {self.spec.model_id} produces {self.dimension}-dimension embeddings and was not trained "
                    "to be truncated; omit 'dimensions' or set the model option matryoshka=true",
                    param="dimensions",
                )
        return items, dimensions

    def info(self) -> dict[str, Any]:
        return {"dimension": self.dimension}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
