"""HTTP client for one worker, over its Unix socket (aiohttp: 0.19 ms p50 measured, 4x faster than httpx).

Requests are JSON (files travel as paths the worker opens: same host, same user); answers are length-prefixed
frames (``modelhost.worker.frames``), so binary results arrive as bytes with no line limit and no base64.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from modelhost.errors import InvalidRequest
from modelhost.worker import frames
from modelhost.worker.protocol import TOKEN_HEADER

StreamItem = tuple[int, dict[str, Any] | bytes]
_JSON_HEADERS = {"Content-Type": "application/json"}


class WorkerProtocolError(Exception):
    """The worker's answer broke off or was malformed (the connection was cut, or the worker died)."""


class WorkerClient:
    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self._session = aiohttp.ClientSession(
            base_url="http://worker",
            connector=aiohttp.UnixConnector(path=socket_path, limit=1024, force_close=False),
            headers={TOKEN_HEADER: token},
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def health(self, timeout: float = 2.0) -> dict[str, Any]:
        async with self._session.get("/healthz", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body: dict[str, Any] = orjson.loads(await resp.read())
            return body

    async def info(self, timeout: float = 5.0) -> dict[str, Any]:
        async with self._session.get("/info", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body: dict[str, Any] = orjson.loads(await resp.read())
            return body

    async def infer(
        self,
        payload: dict[str, Any],
        *,
        request_id: str,
        idle_timeout: float,
        files: Mapping[str, Path] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST /infer → ``(status, body)``: the result envelope (binary values as ``bytes``) when the status is
        200, else the error envelope. A cut answer raises ``WorkerProtocolError``."""
        envelope = encode_envelope(payload, request_id, idle_timeout, files, stream=False)
        async with self._session.post("/infer", data=envelope, headers=_JSON_HEADERS) as resp:
            if resp.status != 200 or resp.content_type != frames.MEDIA_TYPE:
                return resp.status, await _error_body(resp)
            result: dict[str, Any] | None = None
            blobs: list[bytes] = []
            async for kind, data in read_frames(resp.content):
                if kind == frames.JSON:
                    result = orjson.loads(data)
                elif kind == frames.BYTES:
                    blobs.append(data)
                elif kind == frames.ERROR:
                    error: dict[str, Any] = orjson.loads(data)
                    return int(error.pop("status", 500)), error
                elif result is not None:  # DONE
                    joined: dict[str, Any] = frames.join_binary(result, blobs)
                    return 200, joined
            raise WorkerProtocolError("the worker's answer ended before it was complete")

    async def infer_stream(
        self,
        payload: dict[str, Any],
        *,
        request_id: str,
        idle_timeout: float,
        files: Mapping[str, Path] | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """POST /infer with ``stream``: yields ``(status, item)``. While status is 200 ``item`` is a partial result
        (a dict, or bytes for a binary chunk); a failure is one last ``(status, error envelope)``. The generator ends
        normally only after the worker's ``DONE`` frame; a cut connection raises ``WorkerProtocolError``."""
        envelope = encode_envelope(payload, request_id, idle_timeout, files, stream=True)
        async with self._session.post("/infer", data=envelope, headers=_JSON_HEADERS) as resp:
            if resp.status != 200 or resp.content_type != frames.MEDIA_TYPE:
                yield resp.status, await _error_body(resp)
                return
            async for kind, data in read_frames(resp.content):
                if kind == frames.JSON:
                    yield 200, orjson.loads(data)
                elif kind == frames.BYTES:
                    yield 200, data
                elif kind == frames.ERROR:
                    error: dict[str, Any] = orjson.loads(data)
                    yield int(error.pop("status", 500)), error
                    return
                else:  # DONE
                    return
            raise WorkerProtocolError("the worker's stream ended before it was complete")

    async def shutdown(self) -> None:
        async with self._session.post("/shutdown", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            await resp.read()

    async def close(self) -> None:
        await self._session.close()


def check_encodable(payload: dict[str, Any]) -> None:
    """Raise the 400 of ``encode_envelope`` before any worker is started for a payload that cannot be sent."""
    encode_envelope(payload, "", 0.0, None, stream=False)


def encode_envelope(
    payload: dict[str, Any], request_id: str, idle_timeout: float, files: Mapping[str, Path] | None, *, stream: bool
) -> bytes:
    """The JSON request body. Text that is not valid Unicode (a lone surrogate) is the caller's mistake: 400."""
    body: dict[str, Any] = {"payload": payload, "request_id": request_id, "idle_timeout": idle_timeout}
    if files:
        body["files"] = {name: str(path) for name, path in files.items()}
    if stream:
        body["stream"] = True
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson refuses str that is not valid UTF-8, e.g. "\ud800"
        raise InvalidRequest(
            "the request holds text that is not valid Unicode (e.g. a lone surrogate such as \\ud800)",
            code="invalid_unicode",
        ) from None


async def _error_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await resp.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        message = f"the worker answered {resp.status} without an error envelope"
        body = {"error": {"message": message, "type": "worker_error"}}
    return body


async def read_frames(stream: aiohttp.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """``(kind, payload)`` until the body ends; a body cut inside a frame raises ``WorkerProtocolError``."""
    while True:
        try:
            head = await stream.readexactly(frames.HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise WorkerProtocolError("the worker's answer broke off inside a frame header") from None
            return
        try:
            kind, length = frames.header(head)
            data = await stream.readexactly(length) if length else b""
        except ValueError as exc:
            raise WorkerProtocolError(str(exc)) from None
        except asyncio.IncompleteReadError:
            raise WorkerProtocolError("the worker's answer broke off inside a frame") from None
        yield kind, data
