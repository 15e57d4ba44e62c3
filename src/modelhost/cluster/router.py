"""``ClusterRouter``: the coordinator's ``infer``/``infer_stream`` for a process in a cluster.

A model this process serves (the front unless ``--no-local-workers``; on a node, a model whose ``model.<id>`` or
device-class queue the node consumes) runs on the local coordinator. Any other goes to a node as a Celery task on
``model.<id>`` when a live node consumes that queue, else on its device-class queue (``cpu``/``gpu``). The reply —
or each streamed chunk — comes back on a Redis list the caller waits on with BLPOP (request/reply without Celery's
result backend: one Redis round trip, no polling; the measured cost is in docs/benchmarks.md). Everything else
(workers, GPU lock, stop a worker…) is the local coordinator's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.cluster.celery import INFER_STREAM_TASK, INFER_TASK, device_queue, model_queue, send
from modelhost.cluster.registry import NodeRegistry
from modelhost.errors import (
    ModelhostError,
    ModelUnavailable,
    QueueFull,
    WorkerCrashed,
    from_worker_error,
)
from modelhost.jobs.pipeline import TransientError

if TYPE_CHECKING:
    from celery import Celery

    from modelhost.catalog.schemas import ModelEntry
    from modelhost.config import Settings
    from modelhost.coordinator.coordinator import Coordinator
    from modelhost.storage.blobs import BlobStore

log = logging.getLogger(__name__)

REPLY_PREFIX = "modelhost:reply:"
#: One BLPOP waits at most this long (below redis-py's socket timeout), then the next one starts.
BLPOP_SLICE_SECONDS = 2.0
#: Replies nobody waits for any more expire after this long.
REPLY_TTL_SECONDS = 600


class BrokerUnavailable(TransientError):
    """Redis (the broker) cannot be reached: 503 for a request; a job step retries with backoff."""

    code = "broker_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class RemoteError(ModelhostError):
    """An error a node answered, re-raised here with its status, type and code."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message") or "node error"), param=error.get("param"), code=error.get("code"))
        self.status_code = status
        self.error_type = str(error.get("type") or "server_error")


_TRANSIENT_BY_CODE: dict[str, type[ModelhostError]] = {
    "worker_crashed": WorkerCrashed,
    "queue_full": QueueFull,
}


def error_from_reply(status: int, error: dict[str, Any]) -> ModelhostError:
    """The typed error for a node's answer: retryable kinds keep their class (the jobs engine retries them)."""
    code = str(error.get("code") or "")
    message = str(error.get("message") or "node error")
    if code == "model_unavailable" or status == 503:
        return ModelUnavailable(message, code=code or None)
    if code in _TRANSIENT_BY_CODE:
        return _TRANSIENT_BY_CODE[code](message, code=code)
    if status in (400, 404, 413, 415, 422):
        return from_worker_error(status, error)
    return RemoteError(status, error)


REQUEST_FILES_PREFIX = "requests/"


def _size(data: Any) -> int:
    if isinstance(data, Path):
        return data.stat().st_size
    if isinstance(data, bytes):
        return len(data)
    start = data.tell()
    end = data.seek(0, 2)
    data.seek(start)
    return int(end - start)


def encode_files(
    files: Mapping[str, Any] | None, blobs: BlobStore | None = None, prefix: str = "", inline_bytes: int = 0
) -> dict[str, Any]:
    """Request files (the coordinator's ``FileRef``: a path, an open binary file or bytes) as JSON for a task: with
    a shared blob store (S3 in a cluster), each over ``inline_bytes`` is stored under ``<prefix><name>`` and the task
    carries the key (``{"blob": key}``); smaller ones (``broker_inline_file_bytes``), and every one without a shared
    store (local blobs: another machine could not read them), go inline as base64."""
    encoded: dict[str, Any] = {}
    for name, ref in (files or {}).items():
        if isinstance(ref, str | Path):
            data: Any = Path(ref)
        elif isinstance(ref, bytes | bytearray | memoryview):
            data = bytes(ref)
        else:  # an open binary file (an upload): read from its start
            ref.seek(0)
            data = ref
        if blobs is not None and _size(data) > inline_bytes:
            encoded[name] = {"blob": blobs.put(prefix + name, data).key}
        else:
            raw = data.read_bytes() if isinstance(data, Path) else data if isinstance(data, bytes) else data.read()
            encoded[name] = {"data": base64.b64encode(raw).decode()}
    return encoded


def decode_files(encoded: dict[str, Any], blobs: BlobStore | None = None) -> dict[str, bytes] | None:
    """The files of a task: read from the blob store (``{"blob": key}``) or decoded (``{"data": base64}``)."""
    if not encoded:
        return None
    decoded: dict[str, bytes] = {}
    for name, ref in encoded.items():
        if "blob" in ref:
            if blobs is None or not str(ref["blob"]).startswith(REQUEST_FILES_PREFIX):
                raise ValueError(f"request file {name!r}: no blob store here, or not a request file's key")
            decoded[name] = blobs.get(str(ref["blob"]))
        else:
            decoded[name] = base64.b64decode(ref["data"])
    return decoded


_BYTES_KEY = "__bytes__"


def pack_message(message: Any) -> Any:
    """A reply as JSON: binary values (audio, float32 vectors) become ``{"__bytes__": base64}``."""
    if isinstance(message, bytes | bytearray | memoryview):
        return {_BYTES_KEY: base64.b64encode(bytes(message)).decode()}
    if isinstance(message, dict):
        return {k: pack_message(v) for k, v in message.items()}
    if isinstance(message, list | tuple):
        return [pack_message(v) for v in message]
    return message


def unpack_message(message: Any) -> Any:
    if isinstance(message, dict):
        if len(message) == 1 and _BYTES_KEY in message:
            return base64.b64decode(message[_BYTES_KEY])
        return {k: unpack_message(v) for k, v in message.items()}
    if isinstance(message, list):
        return [unpack_message(v) for v in message]
    return message


class ClusterRouter:
    def __init__(self, local: Coordinator, settings: Settings) -> None:
        import redis.asyncio

        assert settings.broker_url
        self.local = local
        self.settings = settings
        self.registry = NodeRegistry(settings.broker_url, settings.node_heartbeat_seconds)
        self.redis = redis.asyncio.Redis.from_url(settings.broker_url, socket_connect_timeout=5)
        #: Queues this process consumes (a node sets them); None: the front, which serves locally iff
        #: ``settings.local_workers``.
        self.local_queues: set[str] | None = None
        self._celery: Celery | None = None
        #: Where request files travel to a node: the shared blob store (S3) when one is configured.
        self.blobs: BlobStore | None = None
        if settings.storage.url:
            from modelhost.storage.blobs import build_blob_store

            # Not cached: this store only writes request files, which the node that reads them reads once.
            self.blobs = build_blob_store(settings.data_dir, settings.storage)
        self._deleting: set[asyncio.Task[None]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            from modelhost.cluster.celery import build_celery

            self._celery = build_celery(self.settings)
        return self._celery

    async def start(self) -> None:
        await self.local.start()

    async def stop(self) -> None:
        await asyncio.gather(*self._deleting, return_exceptions=True)
        await self.local.stop()
        await self.redis.aclose()
        self.registry.close()

    # -- routing ---------------------------------------------------------------------------------------------
    def serves_locally(self, model: ModelEntry) -> bool:
        if self.local_queues is None:
            return self.settings.local_workers
        return bool({model_queue(model.id), device_queue(model)} & self.local_queues)

    def target_queue(self, model: ModelEntry) -> str:
        """The queue a node for ``model`` consumes; 503 when no live node does."""
        import redis

        try:
            nodes = self.registry.cached_nodes()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"the broker (Redis) is unreachable: {exc}") from None
        consumed = {q for node in nodes for q in node.get("queues", [])}
        for queue in (model_queue(model.id), device_queue(model)):
            if queue in consumed:
                return queue
        raise ModelUnavailable(
            f"no node serves model {model.id!r}: start one with `modelhost node --preload {model.id}` "
            f"or `--queues {device_queue(model)}` ({len(nodes)} nodes alive)",
            code="no_node",
        )

    async def _send(self, task: str, model: ModelEntry, payload: dict[str, Any], files: Any) -> tuple[str, bool]:
        """Queue the request: its reply key, and whether files of it went to the blob store (``requests/<id>/``:
        ``_forget`` deletes them after the call)."""
        queue = await asyncio.to_thread(self.target_queue, model)
        request = uuid.uuid4().hex
        reply = REPLY_PREFIX + request
        encoded = await asyncio.to_thread(
            encode_files, files, self.blobs, f"{REQUEST_FILES_PREFIX}{request}/", self.settings.broker_inline_file_bytes
        )
        stored = any("blob" in ref for ref in encoded.values())
        args = [model.id, payload, encoded, reply]
        try:
            await asyncio.to_thread(send, self.celery, task, args, queue)
        except Exception as exc:  # kombu raises OperationalError and friends once its retries are spent
            await self._forget(reply, stored)
            raise BrokerUnavailable(f"cannot queue the request for model {model.id!r}: {exc}") from None
        return reply, stored

    async def _forget(self, reply: str, stored: bool) -> None:
        """Delete a finished request's files from the blob store (``stored``: some went there), in the background:
        the answer does not wait for the S3 round trips (``stop`` waits for the deletions still running)."""
        if self.blobs is None or not stored:
            return
        blobs = self.blobs

        async def delete() -> None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(blobs.delete, REQUEST_FILES_PREFIX + reply.removeprefix(REPLY_PREFIX))

        task = asyncio.create_task(delete())
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def _next(self, reply: str, timeout: float, model: ModelEntry) -> dict[str, Any]:
        import redis

        deadline = time.monotonic() + timeout
        got = None
        while got is None and time.monotonic() < deadline:
            # Short waits: redis-py gives up reading a socket after its socket_timeout (5 s by default).
            wait = max(0.01, min(BLPOP_SLICE_SECONDS, deadline - time.monotonic()))
            try:
                got = await self.redis.blpop([reply], timeout=wait)
            except redis.RedisError as exc:
                raise BrokerUnavailable(
                    f"lost the broker (Redis) while waiting for model {model.id!r}: {exc}"
                ) from None
        if got is None:
            from modelhost.errors import InferenceTimeout

            raise InferenceTimeout(f"no node answered for model {model.id!r} within {timeout:g} s")
        message: dict[str, Any] = unpack_message(json.loads(got[1]))
        if "error" in message:
            raise error_from_reply(int(message.get("status", 500)), message["error"])
        return message

    def _timeout(self) -> float:
        return float(self.local.runtime.current.worker_request_timeout_seconds) + 30.0

    # -- the coordinator interface ---------------------------------------------------------------------------
    async def infer(self, model: ModelEntry, payload: dict[str, Any], files: Any = None) -> dict[str, Any]:
        if self.serves_locally(model):
            return await self.local.infer(model, payload, files)
        reply, stored = await self._send(INFER_TASK, model, payload, files)
        try:
            message = await self._next(reply, self._timeout(), model)
        finally:
            await self._forget(reply, stored)
        result: dict[str, Any] = message["result"]
        return result

    async def infer_stream(
        self, model: ModelEntry, payload: dict[str, Any], files: Any = None
    ) -> AsyncIterator[dict[str, Any] | bytes]:
        if self.serves_locally(model):
            async for chunk in self.local.infer_stream(model, payload, files):
                yield chunk
            return
        reply, stored = await self._send(INFER_STREAM_TASK, model, payload, files)
        finished = False
        try:
            while True:
                message = await self._next(reply, self._timeout(), model)
                if message.get("done"):
                    finished = True
                    return
                yield message["chunk"]
        finally:
            if not finished:  # the client went away (or an error): tell the node to stop generating
                with contextlib.suppress(Exception):
                    await self.redis.set(reply + ":cancel", "1", ex=REPLY_TTL_SECONDS)
            with contextlib.suppress(Exception):
                await self.redis.delete(reply)
            await self._forget(reply, stored)

    async def nodes(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.registry.nodes)


async def cluster_nodes(coordinator: object) -> list[dict[str, Any]] | None:
    """The live nodes when ``coordinator`` is a ``ClusterRouter`` (None without a broker; an ``error`` entry when
    Redis cannot be reached)."""
    if not isinstance(coordinator, ClusterRouter):
        return None
    try:
        return await coordinator.nodes()
    except Exception as exc:
        return [{"error": f"the broker (Redis) is unreachable: {exc}"}]
