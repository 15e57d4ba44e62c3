"""What every text-to-speech backend shares: request checks, output formats and streaming.

A subclass sets ``voices``, ``default_voice`` and ``sample_rate`` in ``load()`` and implements ``synthesize``, which
yields float32 mono sample blocks (a sentence each, or the whole text). Payload: ``input``, ``voice``,
``response_format`` (wav | mp3 | flac | opus | aac | pcm), ``speed`` (0.25–4), ``seed``.
``infer_stream`` yields the audio as bytes (sent as binary frames): per block for wav/pcm, encoded pieces
otherwise. ``infer`` answers ``{"audio": bytes, "format", "sample_rate", "duration"}``.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import Backend
from modelhost.media.audio import ENCODINGS, encode_pcm16, to_pcm16, wav_header
from modelhost.worker.protocol import InvalidInput

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("wav", "pcm", *ENCODINGS)
CHUNK_BYTES = 32 * 1024


class SpeechBackend(Backend):
    supports_streaming = True
    voices: list[str]
    default_voice: str
    sample_rate: int

    def synthesize(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _blocks(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        """``synthesize`` without empty blocks. The first block is computed before anything is yielded, so input
        with nothing speakable (only emoji) is a 400 before the answer starts, never an empty 200; a ValueError
        from the engine on odd input (hibari's lexicon on "😀¹") is a 400 too, never a 500."""
        try:
            produced = False
            for block in self.synthesize(text, voice, speed, seed):
                if len(block):
                    produced = True
                    yield block
        except ValueError as exc:
            raise InvalidInput(
                f"model {self.spec.model_id} cannot speak this input: {exc}", param="input", code="unspeakable_input"
            ) from exc
        if not produced:
            raise InvalidInput(
                "'input' holds nothing speakable (no words, digits or letters the voice can read)",
                param="input",
                code="unspeakable_input",
            )

    def _check(self, payload: dict[str, Any]) -> tuple[str, str, str, float]:
        # NFKC turns compatibility characters (superscripts, full-width letters, ligatures) into what they mean
        text = unicodedata.normalize("NFKC", str(payload.get("input") or ""))
        if not text.strip():
            raise InvalidInput("'input' must not be empty", param="input", code="empty_input")
        voice = str(payload.get("voice") or self.default_voice)
        if voice not in self.voices:
            raise InvalidInput(
                f"unknown voice {voice!r} for model {self.spec.model_id}; available voices: {', '.join(self.voices)}",
                param="voice",
                code="unknown_voice",
            )
        fmt = str(payload.get("response_format") or "mp3")
        if fmt not in FORMATS:
            raise InvalidInput(f"response_format must be one of {', '.join(FORMATS)}", param="response_format")
        speed = float(payload.get("speed") or 1.0)
        if not 0.25 <= speed <= 4.0:
            raise InvalidInput("speed must be between 0.25 and 4.0", param="speed")
        return text, voice, fmt, speed

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        text, voice, fmt, speed = self._check(payload)
        pcm = b"".join(to_pcm16(block) for block in self._blocks(text, voice, speed, payload.get("seed")))
        return {
            "audio": encode_pcm16(pcm, self.sample_rate, fmt),
            "format": fmt,
            "sample_rate": self.sample_rate,
            "duration": len(pcm) / 2 / self.sample_rate,
        }

    def infer_stream(
        self, payload: dict[str, Any], files: dict[str, Path], cancelled: threading.Event
    ) -> Iterator[dict[str, Any] | bytes]:
        text, voice, fmt, speed = self._check(payload)
        blocks = self._blocks(text, voice, speed, payload.get("seed"))
        if fmt in ("wav", "pcm"):
            first = next(blocks)  # before the header: a bad input is still a 4xx
            yield (wav_header(self.sample_rate) if fmt == "wav" else b"") + to_pcm16(first)
            for samples in blocks:
                if cancelled.is_set():
                    return
                yield to_pcm16(samples)
            return
        pcm = bytearray()
        for samples in blocks:
            if cancelled.is_set():
                return
            pcm += to_pcm16(samples)
        encoded = encode_pcm16(bytes(pcm), self.sample_rate, fmt)
        for start in range(0, len(encoded), CHUNK_BYTES):
            yield encoded[start : start + CHUNK_BYTES]

    def info(self) -> dict[str, Any]:
        return {"voices": self.voices, "sample_rate": self.sample_rate}
