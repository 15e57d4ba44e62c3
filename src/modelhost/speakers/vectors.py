"""Voiceprints in Qdrant through qdrant-client: embedded local mode under the data dir, or a server by URL.

qdrant-client (and the numpy it brings) is imported on first use, so a serve process that never touches speakers
does not load it. One collection per speaker-embedding model (cosine distance, the model's dimension, created on
first use); every point also records its model in the payload and searches filter on it, so voiceprints of
different models are never compared. Calls are blocking: callers run them in a thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelhost.config import Settings

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceprintMatch:
    external_id: str
    name: str | None
    score: float


def point_id(model: str, external_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"modelhost-voiceprint:{model}:{external_id}"))


class VoiceprintIndex:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: QdrantClient | None = None
        self._collections: set[str] = set()
        # One operation at a time: local mode is not safe under concurrent threads, and two enrollments must not
        # both create the collection.
        self._lock = threading.RLock()

    def client(self) -> QdrantClient:
        with self._lock:
            if self._client is None:
                started = time.monotonic()
                from qdrant_client import QdrantClient

                qdrant = self.settings.qdrant
                if qdrant.url:
                    key = qdrant.api_key.get_secret_value() if qdrant.api_key else None
                    self._client = QdrantClient(url=qdrant.url, api_key=key)
                    where = qdrant.url
                else:
                    self.settings.qdrant_path.mkdir(parents=True, exist_ok=True)
                    self._client = QdrantClient(path=str(self.settings.qdrant_path))
                    where = str(self.settings.qdrant_path)
                log.info("qdrant client ready (%s) in %.2f s", where, time.monotonic() - started)
            return self._client

    def collection(self, model: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", model)
        return f"{self.settings.qdrant.collection_prefix}_{safe}"

    def _ensure(self, model: str, dimensions: int) -> str:
        from qdrant_client import models

        name = self.collection(model)
        if name in self._collections:
            return name
        client = self.client()
        if not client.collection_exists(name):
            client.create_collection(
                name, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
            )
        self._collections.add(name)
        return name

    def upsert(self, model: str, external_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        with self._lock:
            from qdrant_client import models

            name = self._ensure(model, len(vector))
            point = models.PointStruct(
                id=point_id(model, external_id),
                vector=vector,
                payload={**payload, "external_id": external_id, "model": model},
            )
            self.client().upsert(name, points=[point], wait=True)

    def set_payload(self, model: str, external_id: str, payload: dict[str, Any]) -> None:
        with self._lock:
            name = self.collection(model)
            client = self.client()
            if not client.collection_exists(name):
                return
            client.set_payload(name, payload=payload, points=[point_id(model, external_id)], wait=True)

    def delete(self, model: str, external_id: str) -> None:
        with self._lock:
            from qdrant_client import models

            name = self.collection(model)
            client = self.client()
            if not client.collection_exists(name):
                return
            client.delete(name, points_selector=models.PointIdsList(points=[point_id(model, external_id)]), wait=True)

    def search(self, model: str, vector: list[float], limit: int = 5) -> list[VoiceprintMatch]:
        with self._lock:
            from qdrant_client import models

            name = self.collection(model)
            client = self.client()
            if not client.collection_exists(name):
                return []
            only_model = models.Filter(must=[models.FieldCondition(key="model", match=models.MatchValue(value=model))])
            points = client.query_points(
                name, query=vector, query_filter=only_model, limit=limit, with_payload=True
            ).points
            return [
                VoiceprintMatch(
                    external_id=str((p.payload or {}).get("external_id")),
                    name=(p.payload or {}).get("name"),
                    score=round(float(p.score), 4),
                )
                for p in points
            ]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._collections.clear()
