"""Client for one worker, over its Unix sockets.

Inference goes over one long-lived connection to the worker's inference socket (``modelhost.worker.frames``):
requests are multiplexed on it by request id, so concurrent calls neither open connections nor wait for each other,
and an answer costs one write and one read of length-prefixed frames (binary results as raw bytes, no HTTP, no
base64). Requests are JSON (files travel as paths the worker opens: same host, same user). ``/healthz``, ``/info``
and ``/shutdown`` stay on the worker's HTTP socket (aiohttp), off the hot path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from modelhost.errors import InvalidRequest
from modelhost.worker import frames
from modelhost.worker.protocol import TOKEN_HEADER

StreamItem = tuple[int, dict[str, Any] | bytes]
#: A request's payload: a dict, or its JSON already encoded (``encode_payload``).
Payload = dict[str, Any] | orjson.Fragment


class WorkerProtocolError(Exception):
    """The worker's answer broke off or was malformed (the connection was cut, or the worker died)."""


class WorkerClient:
    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self._token = token
        self._session = aiohttp.ClientSession(
            base_url="http://worker",
            connector=aiohttp.UnixConnector(path=socket_path, limit=16, force_close=False),
            headers={TOKEN_HEADER: token},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._stream: _InferStream | None = None
        self._connecting: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._closed = False

    async def health(self, timeout: float = 2.0, wait: float = 0.0) -> dict[str, Any]:
        """The worker's ``/healthz``; ``wait`` > 0: while it is STARTING, answered when loading ends or after
        ``wait`` seconds (``timeout`` counts on top of it)."""
        params = {"wait": f"{wait:.3f}"} if wait > 0 else None
        total = aiohttp.ClientTimeout(total=timeout + max(wait, 0.0))
        async with self._session.get("/healthz", params=params, timeout=total) as resp:
            body: dict[str, Any] = orjson.loads(await resp.read())
            return body

    async def info(self, timeout: float = 5.0) -> dict[str, Any]:
        async with self._session.get("/info", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body: dict[str, Any] = orjson.loads(await resp.read())
            return body

    async def infer(
        self,
        payload: Payload,
        *,
        request_id: str,
        idle_timeout: float,
        files: Mapping[str, Path] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One request → ``(status, body)``: the result envelope (binary values as ``bytes``) when the status is
        200, else the error envelope. A cut answer raises ``WorkerProtocolError``; no answer within ``timeout``
        seconds (connecting included) raises ``TimeoutError``, and the worker is sent ``CANCEL``. ``payload``: a
        dict, or its JSON already encoded (``encode_payload``)."""
        envelope = encode_envelope(payload, request_id, idle_timeout, files, stream=False)
        # What ``_call`` does, without an async generator: this is every embedding request's path. The deadline is
        # kept by the connection (one timer for all its calls), not by an ``asyncio.timeout`` per request.
        stream = self._stream
        if stream is not None and stream.open:
            deadline = None if timeout is None else stream.loop.time() + timeout
        else:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            async with asyncio.timeout_at(deadline):
                stream = await self._connected()
        rid = next(self._ids) & 0xFFFFFFFF
        call = stream.start(rid, envelope, deadline)
        try:
            result: dict[str, Any] | None = None
            blobs: list[bytes] = []
            while True:
                kind, data = await call.next()
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
                else:
                    raise WorkerProtocolError("the worker's answer ended before its result")
        finally:
            stream.finish(rid, cancel=not call.finished)

    async def infer_stream(
        self,
        payload: Payload,
        *,
        request_id: str,
        idle_timeout: float,
        files: Mapping[str, Path] | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """A streamed request: yields ``(status, item)``. While status is 200 ``item`` is a partial result (a dict,
        or bytes for a binary chunk); a failure is one last ``(status, error envelope)``. The generator ends
        normally only after the worker's ``DONE`` frame; a cut connection raises ``WorkerProtocolError``. Closing
        it early sends ``CANCEL``: the worker stops generating."""
        envelope = encode_envelope(payload, request_id, idle_timeout, files, stream=True)
        async with self._call(envelope) as call:
            while True:
                kind, data = await call.next()
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

    async def shutdown(self) -> None:
        async with self._session.post("/shutdown", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            await resp.read()

    async def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._stream.close()
        await self._session.close()

    @contextlib.asynccontextmanager
    async def _call(self, envelope: bytes) -> AsyncGenerator[_Call, None]:
        """Send one request on the inference connection; on the way out, a call that did not finish (cancelled,
        timed out, closed early) is cancelled in the worker too."""
        stream = await self._connected()
        rid = next(self._ids) & 0xFFFFFFFF
        call = stream.start(rid, envelope)
        try:
            yield call
        finally:
            stream.finish(rid, cancel=not call.finished)

    async def _connected(self) -> _InferStream:
        stream = self._stream
        if stream is not None and stream.open:
            return stream
        if self._closed:
            raise WorkerProtocolError("the worker client is closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first calls share one connection
            stream = self._stream
            if stream is None or not stream.open:
                loop = asyncio.get_running_loop()
                path = frames.stream_socket_path(self.socket_path)
                _, stream = await loop.create_unix_connection(_InferStream, path)
                stream.send(frames.encode(frames.HELLO, 0, self._token.encode()))
                self._stream = stream
            return stream


class _Call:
    """The frames of one request as they arrive; ``next()`` waits for the next one."""

    __slots__ = ("_frames", "_loop", "_waiter", "broken", "deadline", "expired", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float | None = None) -> None:
        self._loop = loop  # asyncio.get_running_loop() would cost a getpid() system call per wait
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.broken: str | None = None
        self.deadline = deadline  # loop time; None: no limit
        self.expired = False
        self.finished = False

    def push(self, kind: int, data: bytes) -> None:
        self._frames.append((kind, data))
        if kind in (frames.DONE, frames.ERROR):
            self.finished = True
        self._wake()

    def fail(self, reason: str) -> None:
        self.broken = reason
        self._wake()

    def expire(self) -> None:
        """The deadline passed: ``next()`` raises ``TimeoutError`` (even if frames are waiting, as a cancelled
        ``asyncio.timeout`` would)."""
        self.expired = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> tuple[int, bytes]:
        if self.expired:
            raise TimeoutError
        while not self._frames:
            if self.broken is not None:
                raise WorkerProtocolError(self.broken)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self.expired:
                raise TimeoutError
        return self._frames.popleft()


class _InferStream(asyncio.Protocol):
    """The connection to a worker's inference socket, demultiplexing answer frames to their calls. It keeps their
    deadlines with one timer, set for the earliest deadline of the calls in flight: a call costs no timer of its own
    (with the same timeout for every call, the timer is re-set once per timeout, not once per call)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # made by loop.create_unix_connection, inside the loop
        self.transport: asyncio.Transport | None = None
        self.reader = frames.FrameReader()
        self.calls: dict[int, _Call] = {}
        self.open = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a Unix stream transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            received = self.reader.feed(data)
        except ValueError as exc:
            self._broken(f"the worker's answer was malformed: {exc}")
            return
        calls = self.calls
        for kind, rid, body in received:
            call = calls.get(rid)
            if call is not None:  # else: a call already given up (cancelled): its late frames are dropped
                call.push(kind, body)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio.Protocol signature
        inside = " inside a frame" if self.reader.partial else ""
        self._broken(f"the connection to the worker broke off{inside} before its answer was complete")

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost fails the calls in flight

    def start(self, rid: int, envelope: bytes, deadline: float | None = None) -> _Call:
        call = _Call(self.loop, deadline)
        if not self.open:
            call.fail("the connection to the worker is closed")
            return call
        self.calls[rid] = call
        if deadline is not None and deadline < self._timer_at:
            self._arm(deadline)
        self.send(frames.encode(frames.REQUEST, rid, envelope))
        return call

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._expire)
        self._timer_at = when

    def _expire(self) -> None:
        """The timer: expire the calls whose deadline has passed, then wait for the earliest one left."""
        # Due: what asyncio.timeout would cancel now — a deadline up to the time the timer was set for (a loop
        # runs a timer up to its clock resolution early).
        due = max(self.loop.time(), self._timer_at)
        self._timer, self._timer_at = None, float("inf")
        earliest = float("inf")
        for call in self.calls.values():
            deadline = call.deadline
            if deadline is None or call.expired:
                continue
            if deadline <= due:
                call.expire()
            elif deadline < earliest:
                earliest = deadline
        if earliest != float("inf"):
            self._arm(earliest)

    def finish(self, rid: int, *, cancel: bool) -> None:
        call = self.calls.pop(rid, None)
        if cancel and call is not None and call.broken is None and self.open:
            self.send(frames.encode(frames.CANCEL, rid))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _broken(self, reason: str) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        for call in self.calls.values():
            call.fail(reason)
        self.close()


def check_encodable(payload: dict[str, Any]) -> None:
    """Raise the 400 of ``encode_envelope`` before any worker is started for a payload that cannot be sent."""
    encode_payload(payload)


def encode_payload(payload: dict[str, Any]) -> orjson.Fragment:
    """The payload's JSON, encoded once: checked before any worker is started (a payload that cannot be sent is
    400) and then placed into the envelope as it is. Text that is not valid Unicode (a lone surrogate) is the
    caller's mistake: 400."""
    try:
        return orjson.Fragment(orjson.dumps(payload))
    except TypeError:  # orjson refuses str that is not valid UTF-8, e.g. "\ud800"
        raise InvalidRequest(
            "the request holds text that is not valid Unicode (e.g. a lone surrogate such as \\ud800)",
            code="invalid_unicode",
        ) from None


def encode_envelope(
    payload: Payload, request_id: str, idle_timeout: float, files: Mapping[str, Path] | None, *, stream: bool
) -> bytes:
    """The JSON request body; ``payload`` a dict or already encoded by ``encode_payload``."""
    if not isinstance(payload, orjson.Fragment):
        payload = encode_payload(payload)
    body: dict[str, Any] = {"payload": payload, "request_id": request_id, "idle_timeout": idle_timeout}
    if files:
        body["files"] = {name: str(path) for name, path in files.items()}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)
