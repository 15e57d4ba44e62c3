"""Deterministic backends that test the plumbing only (timeouts, streaming, cancellation) in real workers.

They are loaded by real worker processes through the public 'package.module:ClassName' backend reference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.backends.base import Backend, Files
from modelhost.backends.speech.tts_base import SpeechBackend
from modelhost.backends.text.embeddings_base import EmbeddingBackend
from modelhost.backends.text.textgen_base import Detokenizer, Generation, TextGenerator, plain_chat_prompt
from modelhost.errors import BadInput


class SleepyEmbeddings(EmbeddingBackend):
    """Hash-based 8-d vectors; an input ``sleep:<seconds>`` sleeps that long first (a stuck backend). Options:
    ``load_seconds``, ``fail_load``, and ``oom_once`` / ``sigkill_once`` (a marker path: the first load runs out of
    memory — MemoryError, or SIGKILL as from the OOM killer — and later loads succeed)."""

    def load(self) -> None:
        # As libraries do: the options, hub token included, in a log line (the worker's log must redact it).
        logging.getLogger(__name__).info("loading with options %s", self.options)
        time.sleep(float(self.options.get("load_seconds", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("this backend was told to fail while loading")
        # Out of memory once (the marker file remembers): a MemoryError, or killed by SIGKILL as the OOM killer does.
        for option in ("oom_once", "sigkill_once"):
            marker = self.options.get(option)
            if marker and not Path(marker).exists():
                Path(marker).touch()
                if option == "sigkill_once":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise MemoryError("this backend was told to run out of memory while loading")

    @property
    def dimension(self) -> int:
        return 8

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        for text in texts:
            if text.startswith("sleep:"):
                time.sleep(float(text.split(":", 1)[1]))
            if text == "raise:invalid":
                raise BadInput("this input is refused by the backend", param="input")
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.uint8)[:8] for t in texts]
        vectors = np.asarray(rows, dtype=np.float32) + 1.0
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors, [len(t.split()) for t in texts]


class CountingStream(Backend[dict[str, Any]]):
    """Streams ``{"i": n}`` every ``interval`` seconds up to ``count``; writes how far it got to ``marker``.
    With ``chunk_bytes`` it streams ``count`` binary chunks of that size instead; ``fail_after`` raises after that
    many chunks. ``infer`` reports the files it got (size, sha256, path) and sends back ``echo_bytes`` bytes of
    each as a binary value. ``scratch_bytes``: both first write that many bytes to a temporary file (as a backend
    decoding or rendering through one), reporting its folder."""

    supports_streaming = True

    def load(self) -> None:
        pass

    def infer(self, payload: dict[str, Any], files: Files) -> dict[str, Any]:
        if payload.get("fail_status"):
            raise BadInput("failing on purpose", status=int(payload["fail_status"]), code="busy_on_purpose")
        echo = int(payload.get("echo_bytes", 0))
        scratch = _write_scratch(int(payload.get("scratch_bytes", 0)))
        return {
            "scratch": scratch,
            "sizes": {name: path.stat().st_size for name, path in files.items()},
            "sha256": {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()},
            "paths": {name: str(path) for name, path in files.items()},
            "echo": {name: path.read_bytes()[:echo] for name, path in files.items()} if echo else None,
            "payload": payload,
        }

    def infer_stream(
        self, payload: dict[str, Any], files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any] | bytes]:
        if payload.get("fail_status"):
            raise BadInput("failing on purpose", status=int(payload["fail_status"]), code="busy_on_purpose")
        _write_scratch(int(payload.get("scratch_bytes", 0)))
        marker = Path(str(payload["marker"]))
        produced = 0
        chunk_bytes = int(payload.get("chunk_bytes", 0))
        for i in range(int(payload.get("count", 10))):
            if cancelled.is_set():
                break
            if payload.get("fail_after") is not None and i >= int(payload["fail_after"]):
                raise RuntimeError(f"failing on purpose after {i} chunks: {object()!r}")
            produced = i + 1
            marker.write_text(str(produced))
            yield bytes([i % 256]) * chunk_bytes if chunk_bytes else {"i": i}
            time.sleep(float(payload.get("interval", 0.05)))
        marker.write_text(f"{produced} {'cancelled' if cancelled.is_set() else 'finished'}")


def _write_scratch(size: int) -> str:
    """Write ``size`` bytes to a temporary file, as a backend does that decodes or renders through one: its folder."""
    with tempfile.TemporaryFile(prefix="modelhost-scratch-") as scratch:
        scratch.write(b"s" * size)
        scratch.flush()
    return tempfile.gettempdir()


class BrokenSpeech(SpeechBackend):
    """Speaks one second of a tone, then fails: a failure after the HTTP answer has started."""

    def load(self) -> None:
        self.sample_rate = 16_000
        self.voices = ["tone"]
        self.default_voice = "tone"

    def synthesize(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        yield (0.2 * np.sin(np.arange(self.sample_rate) * 2 * np.pi * 440 / self.sample_rate)).astype(np.float32)
        raise RuntimeError("the voice broke down on purpose")


class NeedsMissingLibrary(Backend[dict[str, Any]]):
    """A backend whose library is not installed in the worker's environment."""

    def load(self) -> None:
        import modelhost_absent_library  # type: ignore[import-not-found]  # noqa: F401  # missing on purpose


class BrokenTextGenerator(TextGenerator):
    """Text generation over the shared token loop with a character "tokenizer": it generates ``a``, ``b``, ``c``…
    and raises after ``fail_after`` tokens (model option, default 5): a failure after the SSE answer has started."""

    def load(self) -> None:
        self.context_length = 512
        self.fail_after = int(self.options.get("fail_after", 5))

    def encode(self, request: Generation) -> list[int]:
        text = request.prompt if request.messages is None else plain_chat_prompt(request.messages)
        return [ord(c) for c in text or " "]

    def tokens(
        self, prompt_ids: list[int], request: Generation, max_new: int, cancelled: threading.Event
    ) -> Iterator[int]:
        for i in range(max_new):
            if i >= self.fail_after:
                raise RuntimeError("the model broke down on purpose")
            yield ord("a") + i % 26

    def is_end(self, token: int) -> bool:
        return False

    def detokenizer(self) -> Detokenizer:
        return CharacterDetokenizer()


class CharacterDetokenizer(Detokenizer):
    def add(self, token: int) -> str:
        return chr(token)
