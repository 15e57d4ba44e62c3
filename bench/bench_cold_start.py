"""Cold start: request → first result of a model whose worker is not running, plain spawn vs zygote fork.

For each built-in model family (the catalog's default model of each: MiniLM on sentence-transformers/torch and on
ONNX, whisper-tiny.en on faster-whisper/CTranslate2, hibari TTS, RapidOCR, Gemma 3 270M on llama.cpp) it registers
copies of the catalog entry, starts the backend's zygote with a first (spawned) worker, then times the first request
of each copy: copies with ``zygote: false`` are plain spawns, the others are forked from the zygote. Each copy is
stopped after its first answer (``idle_timeout_seconds: 0``). Prints the medians, the ratio, the zygote's own import
time, the same request on a running worker (the part no cold start removes; measured once per round, between the
cold starts, as the host's load changes), and the load average (the host is shared: compare ratios, not seconds,
across runs). A family whose zygote refuses to fork (a library starts a thread at import) is measured on plain
spawns only, with the reason.

Run: ``python bench/bench_cold_start.py [--runs N] [--only onnx,whisper] [--device cuda]`` (``--device``: the
models' device; on a GPU each copy also prints the GPU memory its worker reports, to show it ran there).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from tests.support.audio import flite_wav  # noqa: E402
from tests.support.ocr_images import encode, render_lines  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

from modelhost.catalog.builtin import BUILTIN_MODELS  # noqa: E402
from modelhost.catalog.registry import backend_reference  # noqa: E402

Request = Callable[[httpx.Client, str], httpx.Response]


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    model: str  # the catalog entry copied
    request: Request


def _embedding(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": model, "input": "cold start"})


def _transcription(audio: bytes) -> Request:
    def call(http: httpx.Client, model: str) -> httpx.Response:
        files = {"file": ("speech.wav", audio, "audio/wav")}
        return http.post("/v1/audio/transcriptions", data={"model": model}, files=files)

    return call


def _speech(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/audio/speech", json={"model": model, "input": "Cold start.", "response_format": "wav"})


def _ocr(image: bytes) -> Request:
    def call(http: httpx.Client, model: str) -> httpx.Response:
        return http.post("/v1/ocr", data={"model": model}, files={"file": ("line.png", image, "image/png")})

    return call


def _completion(http: httpx.Client, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    return http.post("/v1/completions", json=body)


def families(work: Path, wanted: set[str]) -> list[Family]:
    """The families to measure; the whisper clip (flite) and the OCR image are only made when measured."""
    audio = b""
    if not wanted or "whisper" in wanted:
        audio = flite_wav("The quick brown fox jumps over the lazy dog.", "slt", work / "speech.wav").read_bytes()
    image = b""
    if not wanted or "rapidocr" in wanted:
        image = encode(render_lines(["Invoice 2024-117 was paid on 3 March."], "DejaVuSans.ttf", 32), "PNG")
    return [
        Family("torch", "MiniLM, sentence-transformers (torch)", "all-minilm-l6-v2", _embedding),
        Family("onnx", "MiniLM, ONNX int8", "all-minilm-l6-v2-onnx", _embedding),
        Family("whisper", "whisper tiny.en, faster-whisper (CTranslate2)", "whisper-tiny.en", _transcription(audio)),
        Family("hibari", "hibari TTS (ONNX)", "hibari", _speech),
        Family("rapidocr", "RapidOCR (ONNX + OpenCV)", "rapidocr", _ocr(image)),
        Family("gemma", "Gemma 3 270M, llama.cpp", "gemma-3-270m", _completion),
    ]


def entry(model_id: str, device: str) -> dict[str, Any]:
    found = next(m for m in BUILTIN_MODELS if m.id == model_id)
    return {**found.model_dump(include={"task", "backend", "source", "options"}), "device": device}


def add(server: ServerProcess, model_id: str, base: dict[str, Any], zygote: bool, idle: float) -> None:
    options = {**(base.get("options") or {}), "zygote": zygote}
    with server.client() as http:
        body = {**base, "id": model_id, "options": options, "idle_timeout_seconds": idle}
        http.post("/v1/models", json=body).raise_for_status()


def first_result(server: ServerProcess, family: Family, model: str) -> float:
    with server.client(timeout=600) as http:
        started = time.perf_counter()
        response = family.request(http, model)
        elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{model}: {response.status_code} {response.text[:300]}")
    return elapsed


def zygote_of(server: ServerProcess, backend: str) -> dict[str, Any] | None:
    return next((z for z in server.health()["zygotes"] if z["backend"] == backend), None)


def zygote_outcome(server: ServerProcess, backend: str, zygote_log: Path) -> str | None:
    """None once the backend's zygote listens; the reason when it refused to fork."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = zygote_of(server, backend)
        if found is not None and found["state"] == "READY":
            return None
        text = zygote_log.read_text() if zygote_log.exists() else ""
        refused = [line for line in text.splitlines() if f"for {backend} cannot fork safely" in line]
        if refused:
            return refused[-1].split(": ", 1)[-1]
        time.sleep(0.2)
    return "the zygote did not start within 180 s"


def import_seconds(zygote_log: Path, backend: str) -> str:
    found = re.findall(rf"for {re.escape(backend)}: imported .* in ([0-9.]+) s", zygote_log.read_text())
    return f"{found[-1]} s" if found else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated families: torch,onnx,whisper,hibari,rapidocr,gemma")
    parser.add_argument("--device", default="cpu", help="the models' device: cpu, cuda or cuda:N (default cpu)")
    args = parser.parse_args()
    on_gpu = args.device != "cpu"
    wanted = {name for name in args.only.split(",") if name}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = ServerProcess(work / "data").start()
        zygote_log = work / "data" / "logs" / "zygotes.log"
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        rows: list[tuple[Family, float, float | None, float, str | None]] = []
        try:
            for family in families(work, wanted):
                if wanted and family.key not in wanted:
                    continue
                base = entry(family.model, args.device)
                backend = backend_reference(base["backend"])
                add(server, f"warm-{family.key}", base, zygote=True, idle=-1)
                first_result(server, family, f"warm-{family.key}")  # spawned; starts the zygote (and assembles)
                first_result(server, family, f"warm-{family.key}")
                refused = zygote_outcome(server, backend, zygote_log)
                plain: list[float] = []
                forked: list[float] = []
                # the request itself, on a running worker (what no cold start can remove), measured in every round
                # between the cold starts: the host's load changes, so "fork - warm" compares figures taken together
                running: list[float] = []
                for run in range(args.runs):
                    running.append(first_result(server, family, f"warm-{family.key}"))
                    for zygote, times in ((False, plain), (True, forked)):
                        if zygote and refused:
                            continue
                        model = f"{family.key}-{run}-{'z' if zygote else 'p'}"
                        add(server, model, base, zygote, idle=2 if on_gpu else 0)
                        times.append(first_result(server, family, model))
                        if on_gpu:  # the worker's own account of its GPU memory: it really runs on the GPU
                            with server.client() as http:
                                gpu = http.get(f"/v1/workers/{model}/info").json().get("gpu")
                            print(f"  {model} ({'forked' if zygote else 'spawned'}): gpu {gpu}", flush=True)
                        server.wait_for(lambda m=model: server.worker(m) is None, timeout=60)
                warm = statistics.median(running)
                with server.client() as http:
                    http.delete(f"/v1/workers/warm-{family.key}")
                text = server.log_path.read_text()
                n_forked = len(re.findall(rf"forked by zygote worker pid=\d+ for {family.key}-\d+-z ", text))
                p = statistics.median(plain)
                if refused:
                    line = (
                        f"{family.label} ({family.model}): plain spawn → first result {p:.2f} s; plain only: {refused}"
                    )
                    rows.append((family, p, None, warm, refused))
                else:
                    f = statistics.median(forked)
                    line = (
                        f"{family.label} ({family.model}): plain spawn → first result {p:.2f} s, zygote fork → first "
                        f"result {f:.2f} s (median of {args.runs}; {n_forked} forked; zygote imports in "
                        f"{import_seconds(zygote_log, backend)}), ratio {p / f:.1f}x; the request on a running "
                        f"worker {warm:.2f} s, so the fork's start-up adds {f - warm:.2f} s"
                    )
                    rows.append((family, p, f, warm, None))
                print(line, flush=True)
        finally:
            server.stop()
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
        print("| model | plain spawn → first result | zygote fork → first result | ratio | on a running worker |")
        print("|---|---|---|---|---|")
        for fam, plain_s, fork_s, warm_s, why in rows:
            if fork_s is None:
                print(f"| {fam.label} | {plain_s:.2f} s | plain spawn only: {why} | – | {warm_s:.2f} s |")
            else:
                print(f"| {fam.label} | {plain_s:.2f} s | {fork_s:.2f} s | {plain_s / fork_s:.1f}× | {warm_s:.2f} s |")


if __name__ == "__main__":
    main()
