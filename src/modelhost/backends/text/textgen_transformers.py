"""Text generation with transformers causal LMs (``AutoModelForCausalLM``) from a local path or a hub id.

The decoding loop is our own (KV cache, temperature, top-p, a seeded ``torch.Generator``), so it checks for a
cancelled stream between tokens and counts every token. Chat prompts use the tokenizer's chat template when it
has one, else plain ``role: content`` lines. Options: ``dtype`` (float32; bfloat16/float16 on GPU),
``max_context`` (default: the config's ``max_position_embeddings``), ``trust_remote_code`` (false).
Hub ids download on first use (into the Hugging Face cache); local directories never touch the network.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

from modelhost.backends.base import resolve_source
from modelhost.backends.text.textgen_base import Detokenizer, Generation, TextGenerator, plain_chat_prompt
from modelhost.errors import BadInput


class _IncrementalDetokenizer(Detokenizer):
    """Decode a growing window so that merged pieces and multi-byte characters come out right."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def add(self, token: int) -> str:
        self.ids.append(token)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix) :] if len(text) > len(prefix) else ""


class TransformersTextGenerator(TextGenerator):
    requires = ("torch", "transformers")
    extra = "llm"

    def load(self) -> None:
        import torch
        import transformers

        auto_model: Any = transformers.AutoModelForCausalLM

        torch.set_num_threads(self.spec.threads)
        source = resolve_source(self.spec.source)
        trust = bool(self.options.get("trust_remote_code", False))
        self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        dtype = getattr(torch, str(self.options.get("dtype", "float32")))
        self.model: Any = auto_model.from_pretrained(source, dtype=dtype, trust_remote_code=trust)
        self.model.to(self.spec.device)
        self.model.eval()
        self.torch = torch
        config = self.model.config
        limit = self.options.get("max_context") or getattr(config, "max_position_embeddings", None) or 2048
        self.context_length = int(limit)
        eos: set[int] = set()
        for source_ids in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source_ids, int):
                eos.add(source_ids)
            elif isinstance(source_ids, list | tuple):
                eos.update(int(i) for i in source_ids)
        self.eos_ids = eos
        # transformers 5.x names the KV cache ``cache``; 4.x ``past_key_values``
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def encode(self, request: Generation) -> list[int]:
        if request.messages is None:
            ids = self.tokenizer(request.prompt or "", add_special_tokens=True)["input_ids"]
        elif getattr(self.tokenizer, "chat_template", None):
            try:
                text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # the template's raise_exception or a Jinja error
                raise BadInput(f"the model's chat template refused these messages: {exc}", param="messages") from None
            ids = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(plain_chat_prompt(request.messages), add_special_tokens=True)["input_ids"]
        if not ids:
            raise BadInput("the prompt is empty", param="prompt")
        return [int(i) for i in ids]

    def tokens(
        self, prompt_ids: list[int], request: Generation, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        torch = self.torch
        generator = torch.Generator(device="cpu")
        if request.seed is not None:
            generator.manual_seed(request.seed & 0xFFFF_FFFF_FFFF_FFFF)
        else:
            generator.seed()
        device = self.model.device
        ids = torch.tensor([prompt_ids], device=device)
        past: Any = None
        with torch.inference_mode():
            for _ in range(max_new):
                out = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: past}, **self._keep_last)
                past = out.get("cache", None)
                if past is None:
                    past = out.get("past_key_values", None)
                logits = out.logits[0, -1].float().cpu()
                token = self._sample(logits, request, generator)
                yield token
                if cancelled.is_set():
                    return
                ids = torch.tensor([[token]], device=device)

    def _sample(self, logits: Any, request: Generation, generator: Any) -> int:
        torch = self.torch
        if request.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / request.temperature, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < request.top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=generator))

    def is_end(self, token: int) -> bool:
        return token in self.eos_ids

    def detokenizer(self) -> Detokenizer:
        return _IncrementalDetokenizer(self.tokenizer)

    def info(self) -> dict[str, Any]:
        return {
            **self.generation_info(),
            "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
            "packages": ["transformers", "torch"],
        }
