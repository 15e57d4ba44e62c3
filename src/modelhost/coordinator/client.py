"""HTTP client for one worker, over its Unix socket (aiohttp: 0.19 ms p50 measured, 4x faster than httpx)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from modelhost.worker.protocol import TOKEN_HEADER


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
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST /infer. Binary files go as multipart parts next to a ``json`` part, never base64 in JSON."""
        envelope = {"payload": payload, "request_id": request_id, "idle_timeout": idle_timeout}
        async with self._post_infer(envelope, files) as resp:
            raw = await resp.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = {"error": {"message": raw[:500].decode(errors="replace"), "type": "worker_error"}}
            return resp.status, body

    async def infer_stream(
        self,
        payload: dict[str, Any],
        *,
        request_id: str,
        idle_timeout: float,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> AsyncGenerator[tuple[int, dict[str, Any]], None]:
        """POST /infer with ``stream``: yields ``(status, line)``; a non-200 answer is one ``(status, body)``."""
        envelope = {"payload": payload, "request_id": request_id, "idle_timeout": idle_timeout, "stream": True}
        async with self._post_infer(envelope, files) as resp:
            if resp.status != 200:
                yield resp.status, orjson.loads(await resp.read())
                return
            async for line in resp.content:
                if line.strip():
                    yield 200, orjson.loads(line)

    def _post_infer(
        self, envelope: dict[str, Any], files: dict[str, tuple[str, bytes, str]] | None
    ) -> Any:  # aiohttp's request context manager
        """JSON when there are no files; otherwise multipart with a ``json`` part and one part per file."""
        if not files:
            return self._session.post(
                "/infer", data=orjson.dumps(envelope), headers={"Content-Type": "application/json"}
            )
        form = aiohttp.FormData()
        form.add_field("json", orjson.dumps(envelope), content_type="application/json")
        for name, (filename, data, content_type) in files.items():
            form.add_field(name, data, filename=filename, content_type=content_type)
        return self._session.post("/infer", data=form)

    async def shutdown(self) -> None:
        async with self._session.post("/shutdown", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            await resp.read()

    async def close(self) -> None:
        await self._session.close()
