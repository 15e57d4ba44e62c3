"""Length-prefixed frames: how a worker answers ``POST /infer``. Shared by both sides, stdlib only.

Each frame is a 5-byte header — kind (1 byte) and payload length (4 bytes, big-endian) — then the payload:

* ``JSON``  — a JSON object: the result envelope (non-streamed) or one partial result (streamed);
* ``BYTES`` — raw bytes: a binary partial result (an audio chunk), or a binary value of the preceding JSON frame;
* ``ERROR`` — a JSON error envelope plus ``"status"``: the request failed after the answer started;
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
KINDS = {JSON: "json", BYTES: "bytes", ERROR: "error", DONE: "done"}

HEADER = struct.Struct(">BI")
MAX_FRAME = 2**32 - 1
MEDIA_TYPE = "application/x-modelhost-frames"
_REF = "$bytes"


def encode(kind: int, payload: bytes) -> bytes:
    """Header + payload."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(kind, len(payload)) + payload


def header(data: bytes) -> tuple[int, int]:
    """``(kind, length)`` from the 5 header bytes; ValueError for an unknown kind."""
    kind, length = HEADER.unpack(data)
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind}")
    return int(kind), int(length)


def split_binary(value: Any, blobs: list[bytes] | None = None) -> tuple[Any, list[bytes]]:
    """Replace every ``bytes`` inside dicts and lists by ``{"$bytes": i}``; return the new value and the blobs."""
    blobs = [] if blobs is None else blobs
    if isinstance(value, bytes | bytearray | memoryview):
        blobs.append(bytes(value))
        return {_REF: len(blobs) - 1}, blobs
    if isinstance(value, dict):
        return {k: split_binary(v, blobs)[0] for k, v in value.items()}, blobs
    if isinstance(value, list | tuple):
        return [split_binary(v, blobs)[0] for v in value], blobs
    return value, blobs


def join_binary(value: Any, blobs: list[bytes]) -> Any:
    """The inverse of ``split_binary``."""
    if isinstance(value, dict):
        if len(value) == 1 and _REF in value and isinstance(value[_REF], int):
            return blobs[value[_REF]]
        return {k: join_binary(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [join_binary(v, blobs) for v in value]
    return value
