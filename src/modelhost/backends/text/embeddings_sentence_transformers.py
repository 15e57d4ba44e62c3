"""Text embeddings with sentence-transformers (torch)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import resolve_source
from modelhost.backends.text.embeddings_base import EmbeddingBackend, length_sorted_batches

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class SentenceTransformersEmbeddings(EmbeddingBackend):
    requires = ("torch", "sentence_transformers", "numpy")
    extra = "embeddings"
    # what loading a model imports besides: the model modules of sentence-transformers and BERT's (the architecture of
    # MiniLM and most sentence-transformers models), with transformers' generation code they pull in (0.15 s)
    zygote_preload = (
        "torch",
        "sentence_transformers",
        "sentence_transformers.models",
        "transformers.models.bert.modeling_bert",
        "numpy",
    )

    def load(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.spec.threads)
        device = None if self.spec.device == "auto" else self.spec.device
        self.torch = torch
        self.model = SentenceTransformer(
            resolve_source(self.spec.source),
            device=device,
            trust_remote_code=bool(self.options.get("trust_remote_code", False)),
        )
        self.model.eval()
        self.encode_batch_size = int(self.options.get("batch_size", 32))
        # sentence-transformers >= 6 renamed get_sentence_embedding_dimension()
        model = self.model
        get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dimension = int(get_dimension() or 0)
        self._normalize = bool(self.options.get("normalize", True))
        # sentence-transformers >= 6 renamed tokenize() to preprocess()
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        import numpy as np

        torch = self.torch
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        tokens = [0] * len(texts)
        for batch in length_sorted_batches([len(t) for t in texts], self.encode_batch_size):
            features = self._preprocess([texts[i] for i in batch])
            counts = features["attention_mask"].sum(dim=1).tolist()
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            with torch.inference_mode():
                emb = self.model.forward(features)["sentence_embedding"]
                if self._normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[batch] = emb.float().cpu().numpy()
            for i, count in zip(batch, counts, strict=True):
                tokens[i] = int(count)
        return out, tokens

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "device": str(self.model.device),
            "max_seq_length": self.model.max_seq_length,
            "packages": ["torch", "sentence-transformers", "transformers"],
        }
