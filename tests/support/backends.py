"""Deterministic backends that test the plumbing only (timeouts, streaming, cancellation) in real workers.

They are loaded by real worker processes through the public 'package.module:ClassName' backend reference.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.backends.base import Backend, Files
from modelhost.backends.text.embeddings_base import EmbeddingBackend
from modelhost.errors import BadInput


class SleepyEmbeddings(EmbeddingBackend):
    """Hash-based 8-d vectors; an input ``sleep:<seconds>`` sleeps that long first (a stuck backend)."""

    def load(self) -> None:
        time.sleep(float(self.options.get("load_seconds", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("this backend was told to fail while loading")

    @property
    def dimension(self) -> int:
        return 8

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        for text in texts:
            if text.startswith("sleep:"):
                time.sleep(float(text.split(":", 1)[1]))
            if text == "raise:invalid":
                raise BadInput("this input is refused by the backend", param="input")
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.uint8)[:8] for t in texts]
        vectors = np.asarray(rows, dtype=np.float32) + 1.0
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors, [len(t.split()) for t in texts]


class CountingStream(Backend[dict[str, Any]]):
    """Streams ``{"i": n}`` every ``interval`` seconds up to ``count``; writes how far it got to ``marker``."""

    supports_streaming = True

    def load(self) -> None:
        pass

    def infer(self, payload: dict[str, Any], files: Files) -> dict[str, Any]:
        return {"sizes": {name: len(data) for name, data in files.items()}, "payload": payload}

    def infer_stream(
        self, payload: dict[str, Any], files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        marker = Path(str(payload["marker"]))
        produced = 0
        for i in range(int(payload.get("count", 10))):
            if cancelled.is_set():
                break
            produced = i + 1
            marker.write_text(str(produced))
            yield {"i": i}
            time.sleep(float(payload.get("interval", 0.05)))
        marker.write_text(f"{produced} {'cancelled' if cancelled.is_set() else 'finished'}")
