"""What every text-generation backend shares: the payload, stop sequences, counters, the streaming loop.

Payload (built by ``modelhost.api.routes.completions``): ``prompt`` (a string) or ``messages`` (chat, rendered
with the model's chat template), ``max_tokens``, ``temperature``, ``top_p``, ``stop`` (list of strings),
``seed``, ``frequency_penalty``, ``presence_penalty``, ``ignore_eos`` (keep going past end-of-text tokens:
benchmarks and tests that need a fixed length).

``infer`` answers ``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}``; ``infer_stream`` yields
``{"text": delta}`` chunks and a last chunk that also carries ``finish_reason`` and the token counts. Both run
the same loop, so a streamed answer concatenates to the non-streamed one.

A backend supplies ``encode(request) -> prompt token ids``, ``tokens(prompt_ids, request, cancelled)`` (an
iterator of sampled token ids), ``is_end(token)`` and an incremental ``Detokenizer``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.backends.base import Backend
from modelhost.worker.protocol import InvalidInput, WorkerSpec

ROLES = ("system", "developer", "user", "assistant")
DEFAULT_MAX_TOKENS = 256


@dataclass
class GenerationRequest:
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
    def parse(cls, payload: dict[str, Any]) -> GenerationRequest:
        """Validate again inside the worker: a backend may be called by other code than the API route."""
        messages = payload.get("messages")
        prompt = payload.get("prompt")
        if messages is None and not isinstance(prompt, str):
            raise InvalidInput("send 'prompt' (a string) or 'messages'", param="prompt")
        if messages is not None:
            if not isinstance(messages, list) or not messages:
                raise InvalidInput("'messages' must be a non-empty list", param="messages")
            for i, message in enumerate(messages):
                if not isinstance(message, dict) or message.get("role") not in ROLES:
                    raise InvalidInput(f"messages[{i}].role must be one of {', '.join(ROLES)}", param="messages")
                if not isinstance(message.get("content"), str):
                    raise InvalidInput(f"messages[{i}].content must be a string", param="messages")
        max_tokens = payload.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidInput("max_tokens must be a positive integer", param="max_tokens")
        stop = payload.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise InvalidInput("stop must be a non-empty string or a list of them", param="stop")
        seed = payload.get("seed")
        return cls(
            prompt=prompt if isinstance(prompt, str) else None,
            messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in messages] if messages else None,
            max_tokens=max_tokens,
            temperature=float(payload.get("temperature", 1.0) if payload.get("temperature") is not None else 1.0),
            top_p=float(payload.get("top_p", 1.0) if payload.get("top_p") is not None else 1.0),
            stop=list(stop),
            seed=int(seed) if seed is not None else None,
            frequency_penalty=float(payload.get("frequency_penalty") or 0.0),
            presence_penalty=float(payload.get("presence_penalty") or 0.0),
            ignore_eos=bool(payload.get("ignore_eos", False)),
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


class TextGenerator(Backend):
    supports_streaming = True
    #: The longest prompt + completion the model takes (set by ``load``).
    context_length: int = 2048

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.stats = GenerationStats()

    # -- to implement ------------------------------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        raise NotImplementedError

    def tokens(
        self, prompt_ids: list[int], request: GenerationRequest, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        raise NotImplementedError

    def is_end(self, token: int) -> bool:
        raise NotImplementedError

    def detokenizer(self) -> Detokenizer:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------
    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        text: list[str] = []
        last: dict[str, Any] = {}
        for chunk in self.generate(payload, threading.Event()):
            text.append(chunk["text"])
            last = chunk
        return {
            "text": "".join(text),
            "finish_reason": last.get("finish_reason"),
            "prompt_tokens": last.get("prompt_tokens", 0),
            "completion_tokens": last.get("completion_tokens", 0),
        }

    def infer_stream(
        self, payload: dict[str, Any], files: dict[str, Path], cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        return self.generate(payload, cancelled)

    def generate(self, payload: dict[str, Any], cancelled: threading.Event) -> Iterator[dict[str, Any]]:
        request = GenerationRequest.parse(payload)
        prompt_ids = self.encode(request)
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise InvalidInput(
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
