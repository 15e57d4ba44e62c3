"""What every text-generation backend shares: the payload, stop sequences, counters, the streaming loop.

Request: ``modelhost.schemas.text_generation.GenerationRequest`` (a chat or a plain completion request, validated
there), turned into a ``Generation`` (prompt or chat messages, rendered with the model's chat template, and the
sampling values; ``ignore_eos`` keeps going past end-of-text tokens: benchmarks and tests that need a fixed length).

``infer`` answers ``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}``; ``infer_stream`` yields
``{"text": delta}`` chunks and a last chunk that also carries ``finish_reason`` and the token counts. Both run
the same loop, so a streamed answer concatenates to the non-streamed one.

A backend supplies ``encode(generation) -> prompt token ids``, ``tokens(prompt_ids, request, cancelled)`` (an
iterator of sampled token ids), ``is_end(token)`` and an incremental ``Detokenizer``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelhost.backends.base import Backend, Files
from modelhost.errors import BadInput
from modelhost.schemas.text_generation import ChatCompletionRequest, CompletionRequest, GenerationRequest
from modelhost.worker.protocol import WorkerSpec

DEFAULT_MAX_TOKENS = 256


@dataclass
class Generation:
    """What the generation loop runs: a validated request (``modelhost.schemas.text_generation``) in plain values."""

    prompt: str | None
    messages: list[dict[str, str]] | None
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False

    @classmethod
    def from_request(cls, request: GenerationRequest) -> Generation:
        return cls(
            prompt=request.prompt_text if isinstance(request, CompletionRequest) else None,
            messages=request.chat_messages() if isinstance(request, ChatCompletionRequest) else None,
            max_tokens=request.max_new_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop_sequences,
            seed=request.seed,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            ignore_eos=request.ignore_eos,
        )


class StopMatcher:
    """Cuts the output at the first stop sequence; holds back text that may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.text = ""
        self.emitted = 0
        self.longest = max((len(s) for s in stops), default=0)

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add ``delta``; return (text safe to emit, whether a stop sequence was hit)."""
        self.text += delta
        if not self.stops:
            out, self.emitted = self.text[self.emitted :], len(self.text)
            return out, False
        start = max(0, self.emitted - self.longest)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            out = self.text[self.emitted : cut] if cut > self.emitted else ""
            self.emitted = max(self.emitted, cut)
            self.text = self.text[:cut]
            return out, True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        safe = max(self.emitted, len(self.text) - hold)
        out, self.emitted = self.text[self.emitted : safe], safe
        return out, False

    def flush(self) -> str:
        out, self.emitted = self.text[self.emitted :], len(self.text)
        return out


class Detokenizer:
    """Turns token ids into text deltas, one token at a time (never half a UTF-8 character)."""

    def add(self, token: int) -> str:
        raise NotImplementedError

    def flush(self) -> str:
        return ""


@dataclass
class GenerationStats:
    tokens_generated: int = 0
    prompt_tokens: int = 0
    requests: int = 0
    cancelled: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TextGenerator(Backend[GenerationRequest]):
    request_type = GenerationRequest
    supports_streaming = True
    #: The longest prompt + completion the model takes (set by ``load``).
    context_length: int = 2048

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.stats = GenerationStats()

    # -- to implement ------------------------------------------------------------------------------------------
    def encode(self, request: Generation) -> list[int]:
        raise NotImplementedError

    def tokens(
        self, prompt_ids: list[int], request: Generation, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        raise NotImplementedError

    def is_end(self, token: int) -> bool:
        raise NotImplementedError

    def detokenizer(self) -> Detokenizer:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------
    def infer(self, request: GenerationRequest, files: Files) -> dict[str, Any]:
        text: list[str] = []
        last: dict[str, Any] = {}
        for chunk in self.generate(Generation.from_request(request), threading.Event()):
            text.append(chunk["text"])
            last = chunk
        return {
            "text": "".join(text),
            "finish_reason": last.get("finish_reason"),
            "prompt_tokens": last.get("prompt_tokens", 0),
            "completion_tokens": last.get("completion_tokens", 0),
        }

    def infer_stream(
        self, request: GenerationRequest, files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        return self.generate(Generation.from_request(request), cancelled)

    def generate(self, request: Generation, cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        prompt_ids = self.encode(request)
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise BadInput(
                f"the prompt has {len(prompt_ids)} tokens; this model's context holds {self.context_length}",
                param="messages" if request.messages is not None else "prompt",
                code="context_length_exceeded",
            )
        max_new = min(request.max_tokens or min(DEFAULT_MAX_TOKENS, room), room)
        detok = self.detokenizer()
        stopper = StopMatcher(request.stop)
        count, finish, stopped = 0, "length", False
        try:
            for token in self.tokens(prompt_ids, request, max_new, cancelled):
                if self.is_end(token) and not request.ignore_eos:
                    finish = "stop"
                    break
                count += 1
                out, stopped = stopper.feed(detok.add(token))
                if out:
                    yield {"text": out}
                if stopped:
                    finish = "stop"
                    break
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                if count >= max_new:
                    break
            else:
                finish = "cancelled" if cancelled.is_set() else finish
            tail = ""
            if not stopped:  # release what was held back as a possible stop sequence
                tail, stopped = stopper.feed(detok.flush())
                tail += "" if stopped else stopper.flush()
                finish = "stop" if stopped else finish
            yield {
                "text": tail,
                "finish_reason": finish,
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": count,
            }
        finally:
            with self.stats.lock:
                self.stats.tokens_generated += count
                self.stats.prompt_tokens += len(prompt_ids)
                self.stats.requests += 1
                if finish == "cancelled" or cancelled.is_set():
                    self.stats.cancelled += 1
                    finish = "cancelled"
                self.stats.last = {
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": count,
                    "max_tokens": max_new,
                    "finish_reason": finish,
                }

    def generation_info(self) -> dict[str, Any]:
        with self.stats.lock:
            return {
                "context_length": self.context_length,
                "tokens_generated": self.stats.tokens_generated,
                "prompt_tokens": self.stats.prompt_tokens,
                "generations": self.stats.requests,
                "generations_cancelled": self.stats.cancelled,
                "last_generation": dict(self.stats.last),
            }


def plain_chat_prompt(messages: list[dict[str, str]]) -> str:
    """For models without a chat template: ``role: content`` lines, then ``assistant:``."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"
