"""Workers forked from a zygote (cold start): a second model of a backend starts through the backend's zygote,
answers like a spawned one, idle-exits, and a killed zygote means a plain spawn, never a failed request."""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path

from tests.e2e.test_worker_lifecycle import ONNX, add_model, embed, process_gone
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
