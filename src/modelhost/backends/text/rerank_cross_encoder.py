"""Reranking with a sentence-transformers ``CrossEncoder`` (query and document read together).

Source: a local directory or a hub id of a sequence-classification model with one output (e.g. an MS MARCO
cross-encoder). Scores go through the model's default activation (a sigmoid for one label: 0..1). Options:
``max_length`` (the model's), ``batch_size`` (32), ``trust_remote_code``, ``activation`` (``default`` or
``none`` for raw logits).
"""

from __future__ import annotations

from typing import Any

from modelhost.backends.base import resolve_source
from modelhost.backends.text.rerank_base import RerankBackend
from modelhost.errors import BackendFault


class CrossEncoderReranker(RerankBackend):
    requires = ("torch", "sentence_transformers")
    extra = "embeddings"

    def load(self) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(self.spec.threads)
        device = None if self.spec.device == "auto" else self.spec.device
        max_length = self.options.get("max_length")
        self.model = CrossEncoder(
            resolve_source(self.spec.source),
            device=device,
            max_length=int(max_length) if max_length else None,
            trust_remote_code=bool(self.options.get("trust_remote_code", False)),
        )
        if self.model.num_labels != 1:
            raise BackendFault(
                f"a reranking cross-encoder has one output; this model has {self.model.num_labels} labels",
                code="unsupported_model",
            )
        self.batch_size = int(self.options.get("batch_size", 32))
        activation = str(self.options.get("activation", "default"))
        self.activation = torch.nn.Identity() if activation == "none" else None
        # sentence-transformers >= 6 names the tokenizer `processor`
        self.tokenizer = getattr(self.model, "tokenizer", None) or self.model.processor

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        scores = self.model.predict(
            [(query, d) for d in documents],
            batch_size=self.batch_size,
            show_progress_bar=False,
            activation_fn=self.activation,
            convert_to_numpy=True,
        )
        encoded = self.tokenizer([query] * len(documents), documents, truncation=True, max_length=self.model.max_length)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        return [float(s) for s in scores.reshape(-1)], tokens

    def info(self) -> dict[str, Any]:
        return {
            "device": str(self.model.device),
            "max_length": self.model.max_length,
            "packages": ["torch", "sentence-transformers", "transformers"],
        }
