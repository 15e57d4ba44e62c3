"""Workers forked from a zygote (cold start): a second model of a backend starts through the backend's zygote,
answers like a spawned one, idle-exits, and a killed zygote means a plain spawn, never a failed request."""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path
from typing import Any

from tests.e2e.test_worker_lifecycle import ONNX, SLEEPY, add_model, embed, process_gone
from tests.support.server import ServerProcess


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def zygote_pid(server: ServerProcess) -> int | None:
    log = server.data_dir / "logs" / "zygotes.log"
    found = re.findall(r"zygote pid=(\d+) for ", log.read_text()) if log.exists() else []
    return int(found[-1]) if found else None


def started(server: ServerProcess, how: str, model: str) -> list[int]:
    return [
        int(p)
        for p in re.findall(rf"{how} worker pid=(\d+) for {re.escape(model)} ", Path(server.log_path).read_text())
    ]


def test_second_model_of_a_backend_is_forked_from_the_zygote(own_server: ServerProcess) -> None:
    add_model(own_server, "first", ONNX, idle_timeout_seconds=-1)
    add_model(own_server, "second", ONNX, idle_timeout_seconds=1)
    add_model(own_server, "opted-out", ONNX, idle_timeout_seconds=1, options={"zygote": False})
    first = embed(own_server, "first")
    assert first.status_code == 200, first.text
    assert started(own_server, "spawned", "first")  # the first of its backend: a plain spawn, starting the zygote
    assert own_server.wait_for(lambda: zygote_pid(own_server) is not None, timeout=60)
    zygote = zygote_pid(own_server)
    assert zygote is not None

    second = embed(own_server, "second")
    assert second.status_code == 200, second.text
    assert cos(first.json()["data"][0]["embedding"], second.json()["data"][0]["embedding"]) > 0.9999
    [pid] = started(own_server, "forked by zygote", "second")
    with own_server.client() as http:
        info = http.get("/v1/workers/second/info").json()
    assert info["pid"] == pid
    assert info["started_by"] == "zygote"

    # idle exit: the coordinator learns the forked worker's exit through the zygote
    assert own_server.wait_for(lambda: own_server.worker("second") is None, timeout=6)
    assert process_gone(pid)
    with own_server.client() as http:
        assert 'modelhost_worker_evictions_total{model="second",reason="idle"} 1.0' in http.get("/metrics").text

    assert embed(own_server, "opted-out").status_code == 200
    assert started(own_server, "spawned", "opted-out")
    assert not started(own_server, "forked by zygote", "opted-out")

    add_model(own_server, "third", ONNX, idle_timeout_seconds=-1)
    assert embed(own_server, "third").status_code == 200
    [third] = started(own_server, "forked by zygote", "third")

    # a dead zygote: its running worker keeps serving and is still stopped by pid; the next start is a plain spawn
    os.kill(zygote, signal.SIGKILL)
    assert own_server.wait_for(lambda: process_gone(zygote), timeout=5)
    again = embed(own_server, "second")
    assert again.status_code == 200, again.text
    assert len(started(own_server, "spawned", "second")) == 1
    assert "zygote for" in Path(own_server.log_path).read_text()
    assert embed(own_server, "third").status_code == 200
    with own_server.client() as http:
        assert http.delete("/v1/models/third").status_code in (200, 204)
    assert own_server.wait_for(lambda: process_gone(third), timeout=10)
    assert own_server.worker("third") is None


def zygotes(server: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.health()["zygotes"]
    return found


def ready_zygote(server: ServerProcess) -> dict[str, Any] | None:
    return next((z for z in zygotes(server) if z["state"] == "READY"), None)


def test_an_idle_zygote_stops_and_the_next_model_starts_it_again(own_server: ServerProcess) -> None:
    with own_server.client() as http:
        assert http.patch("/v1/settings", json={"zygote_idle_timeout_seconds": 2}).status_code == 200
    add_model(own_server, "a", ONNX, idle_timeout_seconds=-1)
    add_model(own_server, "b", ONNX, idle_timeout_seconds=-1)
    assert embed(own_server, "a").status_code == 200
    assert own_server.wait_for(lambda: ready_zygote(own_server) is not None, timeout=60)
    assert embed(own_server, "b").status_code == 200
    with own_server.client() as http:
        listed = http.get("/v1/workers").json()
    [zygote] = listed["zygotes"]
    assert zygote["backend"].endswith(":OnnxEmbeddings")
    assert zygote["rss_bytes"] > 10 * 2**20
    assert {w["model"]: w["started_by"] for w in listed["data"]} == {"a": "spawn", "b": "zygote"}
    assert zygote["workers"] == 2
    first = zygote["pid"]

    # a zygote stays while a worker of its backend runs, and stops 2 s after the last one (freeing its memory)
    with own_server.client() as http:
        assert http.delete("/v1/workers/a").status_code == 200
    assert own_server.wait_for(lambda: own_server.worker("a") is None, timeout=10)
    [zygote] = zygotes(own_server)
    assert (zygote["pid"], zygote["workers"], zygote["idle_seconds"]) == (first, 1, None)
    with own_server.client() as http:
        assert http.delete("/v1/workers/b").status_code == 200
    assert own_server.wait_for(lambda: not own_server.health()["workers"], timeout=10)
    assert zygotes(own_server)[0]["idle_seconds"] < 2
    assert own_server.wait_for(lambda: not zygotes(own_server), timeout=10)
    assert own_server.wait_for(lambda: process_gone(first), timeout=5)
    assert f"stopping zygote pid={first} " in Path(own_server.log_path).read_text()

    # the next model of that backend is a plain spawn that starts a new zygote; the one after is forked from it
    assert embed(own_server, "a").status_code == 200
    assert len(started(own_server, "spawned", "a")) == 2
    assert own_server.wait_for(lambda: ready_zygote(own_server) is not None, timeout=60)
    second = ready_zygote(own_server)
    assert second is not None
    assert second["pid"] != first
    assert embed(own_server, "b").status_code == 200
    assert len(started(own_server, "forked by zygote", "b")) == 2
    assert "plain spawn instead" not in Path(own_server.log_path).read_text()  # an idle stop is no failure


def test_a_backend_whose_import_starts_a_thread_is_never_forked(own_server: ServerProcess) -> None:
    threaded = {
        "task": "embeddings",
        "backend": "tests.support.threaded_import:ThreadAtImportEmbeddings",
        "source": "-",
    }
    for name in ("t1", "t2", "t3"):
        add_model(own_server, name, threaded, idle_timeout_seconds=-1)
    assert embed(own_server, "t1").status_code == 200
    log = own_server.data_dir / "logs" / "zygotes.log"
    assert own_server.wait_for(lambda: log.exists() and "cannot fork safely" in log.read_text(), timeout=60)
    assert own_server.wait_for(lambda: not zygotes(own_server), timeout=5)
    for name in ("t2", "t3"):
        assert embed(own_server, name).status_code == 200
        assert started(own_server, "spawned", name)
        assert not started(own_server, "forked by zygote", name)
    server_log = Path(own_server.log_path).read_text()
    assert server_log.count("cannot fork safely") == 1  # recognised once, then plain spawns without retries
    assert log.read_text().count("zygote pid=") == 1


def test_gpu_workers_fork_unless_the_zygote_loaded_the_cuda_driver(own_server: ServerProcess) -> None:
    """A GPU model's worker is forked like a CPU one (it initializes CUDA itself after the fork); a zygote whose
    imports mapped the CUDA driver refuses GPU workers — they are spawned plainly — and still forks CPU workers.
    (The test backends never touch a GPU: ``device`` only decides how their workers start.)"""
    for name in ("g1", "g2"):
        add_model(own_server, name, SLEEPY, device="cuda", idle_timeout_seconds=-1)
    assert embed(own_server, "g1").status_code == 200
    assert own_server.wait_for(lambda: ready_zygote(own_server) is not None, timeout=60)
    assert embed(own_server, "g2").status_code == 200
    assert started(own_server, "forked by zygote", "g2")

    tainted = {**SLEEPY, "backend": "tests.support.cuda_at_import:CudaAtImportEmbeddings"}
    add_model(own_server, "t-gpu-1", tainted, device="cuda", idle_timeout_seconds=-1)
    add_model(own_server, "t-gpu-2", tainted, device="cuda:0", idle_timeout_seconds=-1)
    add_model(own_server, "t-gpu-3", tainted, device="cuda", idle_timeout_seconds=-1)
    add_model(own_server, "t-cpu", tainted, idle_timeout_seconds=-1)
    assert embed(own_server, "t-gpu-1").status_code == 200  # spawned; starts the backend's zygote
    assert own_server.wait_for(
        lambda: any(
            z["backend"].endswith(":CudaAtImportEmbeddings") and z["state"] == "READY" for z in zygotes(own_server)
        ),
        timeout=60,
    )
    for name in ("t-gpu-2", "t-gpu-3"):
        assert embed(own_server, name).status_code == 200
        assert started(own_server, "spawned", name)
        assert not started(own_server, "forked by zygote", name)
    assert embed(own_server, "t-cpu").status_code == 200
    assert started(own_server, "forked by zygote", "t-cpu")
    log = Path(own_server.log_path).read_text()
    assert log.count("GPU workers of tests.support.cuda_at_import:CudaAtImportEmbeddings are spawned plainly") == 1


def test_a_pinned_models_zygote_starts_with_the_server_and_unpinning_releases_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        add_model(server, "pinned-onnx", {**ONNX, "pinned": True})
        # pinning through the catalog starts its backend's zygote before any request
        assert server.wait_for(lambda: ready_zygote(server) is not None, timeout=60)
    finally:
        server.stop()
    server = ServerProcess(tmp_path / "data").start()  # a restart: the pinned model's zygote comes up with it
    try:
        assert server.wait_for(lambda: ready_zygote(server) is not None, timeout=60)
        assert server.worker("pinned-onnx") is None  # a zygote, not a worker: nothing is loaded yet
        assert embed(server, "pinned-onnx").status_code == 200
        assert started(server, "zygote", "pinned-onnx")  # the first worker is already a fork
        with server.client() as http:  # unpinned, with no worker left: its zygote stops on its idle timeout
            assert http.patch("/v1/settings", json={"zygote_idle_timeout_seconds": 1}).status_code == 200
            assert http.patch("/v1/models/pinned-onnx", json={"pinned": False}).status_code == 200
            assert http.delete("/v1/workers/pinned-onnx").status_code == 200
        assert server.wait_for(lambda: not zygotes(server), timeout=30)
    finally:
        server.stop()
