"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path): body limit, metrics.

Authentication and the Host/Origin allowlist live in ``modelhost.api.access``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhost.errors import error_envelope
from modelhost.metrics import CounterSeries, HistogramSeries, Metrics


async def _send_error(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while streaming (chunked bodies, JSON or
    multipart alike)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.too_large = error_envelope(
            f"request body exceeds the limit of {limit} bytes (MODELHOST_MAX_REQUEST_BYTES)",
            "invalid_request_error",
            code="payload_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length.isdigit() and not chunked:
            if int(length) > self.limit:
                await _send_error(send, 413, self.too_large)
                return
            # The HTTP server hands the app exactly Content-Length bytes: nothing to count while streaming.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, self.too_large)


class _TooLarge(BaseException):  # noqa: N818 - a signal, not an error: it must get past FastAPI's handlers
    """Raised from ``receive`` when a body without Content-Length (chunked) passes the limit. A ``BaseException`` so
    that FastAPI's body parsing (which turns any ``Exception`` into a 400) lets it reach this middleware: 413."""


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # each series is looked up once; its updates are plain arithmetic (modelhost.metrics)
        self._counters: dict[tuple[str, str, int], CounterSeries] = {}
        self._histograms: dict[str, HistogramSeries] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], path, status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(key[0], path, str(status))
            counter.value += 1
            histogram = self._histograms.get(path)
            if histogram is None:
                histogram = self._histograms[path] = self.metrics.request_seconds.labels(path)
            histogram.observe(time.perf_counter() - started)
