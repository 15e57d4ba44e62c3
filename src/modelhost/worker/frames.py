"""Length-prefixed frames: the worker's inference stream. Shared by both sides, stdlib only.

The coordinator keeps one long-lived connection to each worker's inference socket (``stream_socket_path``) and
multiplexes its requests over it. Each frame is a 9-byte header — kind (1 byte), request id (4 bytes) and payload
length (4 bytes), big-endian — then the payload. From the coordinator:

* ``HELLO``   — the worker's token (request id 0), the first frame of a connection; a wrong one closes it;
* ``REQUEST`` — a JSON object ``{"payload", "request_id", "idle_timeout", "stream"?, "files"?}``;
* ``CANCEL``  — no payload: the caller gave up (client gone, timeout); a stream stops generating.

From the worker, for one request id:

* ``JSON``  — a JSON object: the result envelope (non-streamed) or one partial result (streamed);
* ``BYTES`` — raw bytes: a binary partial result (an audio chunk), or a binary value of the preceding JSON frame;
* ``ERROR`` — a JSON error envelope plus ``"status"``: the request was refused or failed (the last frame);
* ``DONE``  — a JSON object (``processing_time_ms``): the answer is complete.

There is no line length limit and no base64. Binary values inside a result (a voiceprint, an embedding matrix)
are taken out of the JSON and sent as the ``BYTES`` frames that follow it; in the JSON they are replaced by
``{"$bytes": index}`` (``split_binary`` / ``join_binary``). An answer that ends without ``DONE`` or ``ERROR``
is broken, never complete.
"""

from __future__ import annotations

import struct
from typing import Any

JSON = 1
BYTES = 2
ERROR = 3
DONE = 4
REQUEST = 5
CANCEL = 6
HELLO = 7
KINDS = {
    JSON: "json",
    BYTES: "bytes",
    ERROR: "error",
    DONE: "done",
    REQUEST: "request",
    CANCEL: "cancel",
    HELLO: "hello",
}

HEADER = struct.Struct(">BII")
MAX_FRAME = 2**32 - 1
_REF = "$bytes"
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_HEADER_SIZE = HEADER.size


def stream_socket_path(socket_path: str) -> str:
    """The inference socket beside a worker's HTTP socket (``/healthz``, ``/info``, ``/shutdown``)."""
    return socket_path + ".infer"


def encode(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    """Header + payload."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _pack(kind, request_id, len(payload)) + payload


class FrameReader:
    """Cuts a byte stream into ``(kind, request id, payload)`` frames, whatever the chunking of ``feed``."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def partial(self) -> bool:
        """Whether bytes of an unfinished frame are waiting (a stream that ends here was cut inside a frame)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The frames completed by ``data``; ValueError for an unknown kind (the stream is then unusable)."""
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, int, bytes]] = []
        start, end = 0, len(buffer)
        while end - start >= _HEADER_SIZE:
            kind, request_id, length = _unpack_from(buffer, start)
            if kind not in KINDS:
                raise ValueError(f"unknown frame kind {kind}")
            stop = start + _HEADER_SIZE + length
            if stop > end:
                break
            out.append((kind, request_id, bytes(buffer[start + _HEADER_SIZE : stop])))
            start = stop
        if start:
            del buffer[:start]
        return out


def split_binary(value: Any, blobs: list[bytes] | None = None) -> tuple[Any, list[bytes]]:
    """Replace every ``bytes`` inside dicts and lists by ``{"$bytes": i}``; return the new value and the blobs."""
    blobs = [] if blobs is None else blobs
    return _split(value, blobs), blobs


#: Values that hold no bytes: kept as they are without a call per value (a result's numbers and text).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _split(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        blobs.append(bytes(value))
        return {_REF: len(blobs) - 1}
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _split(v, blobs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else _split(v, blobs) for v in value]
    return value


def join_binary(value: Any, blobs: list[bytes]) -> Any:
    """The inverse of ``split_binary``."""
    if not blobs:  # nothing was taken out
        return value
    return _join(value, blobs)


def _join(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _REF in value and isinstance(value[_REF], int):
            return blobs[value[_REF]]
        return {k: _join(v, blobs) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, blobs) if isinstance(v, dict | list) else v for v in value]
    return value
