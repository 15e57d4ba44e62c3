"""Node heartbeats and queue depths in Redis: what ``/api/health`` (``"nodes"``) and ``modelhost cluster status``
show, and what the router reads to find a node for a model."""

from __future__ import annotations

import json
import time
from typing import Any

NODE_KEY_PREFIX = "modelhost:node:"


class NodeRegistry:
    def __init__(self, redis_url: str, heartbeat_seconds: float) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        self.heartbeat_seconds = heartbeat_seconds
        self._cache: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def beat(self, info: dict[str, Any]) -> None:
        """Write a node's record; it expires after three missed heartbeats."""
        info = {**info, "seen": time.time()}
        ttl = max(1, int(self.heartbeat_seconds * 3 + 0.999))
        self.redis.set(NODE_KEY_PREFIX + str(info["name"]), json.dumps(info), ex=ttl)

    def forget(self, name: str) -> None:
        self.redis.delete(NODE_KEY_PREFIX + name)

    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes (sorted by name), each with the depth of the queues it consumes."""
        keys = sorted(self.redis.scan_iter(match=NODE_KEY_PREFIX + "*", count=100))
        values = self.redis.mget(keys) if keys else []
        nodes = [json.loads(v) for v in values if v]
        queues = sorted({q for n in nodes for q in n.get("queues", [])})
        depths = self.queue_depths(queues)
        for node in nodes:
            node["queue_depth"] = {q: depths.get(q, 0) for q in node.get("queues", [])}
        return sorted(nodes, key=lambda n: str(n["name"]))

    def cached_nodes(self, max_age: float = 1.0) -> list[dict[str, Any]]:
        at, nodes = self._cache
        if time.monotonic() - at > max_age:
            nodes = self.nodes()
            self._cache = (time.monotonic(), nodes)
        return nodes

    def queue_depths(self, queues: list[str]) -> dict[str, int]:
        """Messages waiting in each queue (kombu keeps a Redis list per queue; priorities add suffixed lists)."""
        if not queues:
            return {}
        pipe = self.redis.pipeline()
        for queue in queues:
            pipe.llen(queue)
        return {q: int(n) for q, n in zip(queues, pipe.execute(), strict=True)}

    def close(self) -> None:
        self.redis.close()
