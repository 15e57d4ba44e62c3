"""What every text-to-speech backend shares: request checks, output formats and streaming.

A subclass sets ``voices``, ``default_voice`` and ``sample_rate`` in ``load()`` and implements ``synthesize``, which
yields float32 mono sample blocks (a sentence each, or the whole text). Request:
``modelhost.schemas.text_to_speech.SpeechRequest``; an OpenAI voice name (``alloy``…) picks the default voice.
``infer_stream`` yields the audio as raw ``bytes`` (sent as binary frames, never base64): per block for wav/pcm,
encoded pieces otherwise. ``infer`` answers ``{"audio": bytes, "format", "sample_rate", "duration"}``.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import Backend, Files
from modelhost.errors import BadInput
from modelhost.media.audio import encode_pcm16, to_pcm16, wav_header
from modelhost.schemas.text_to_speech import SpeechRequest

if TYPE_CHECKING:
    import numpy as np

#: Voice names OpenAI clients hard-code; each picks the model's default voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
CHUNK_BYTES = 32 * 1024


class SpeechBackend(Backend[SpeechRequest]):
    request_type = SpeechRequest
    supports_streaming = True
    voices: list[str]
    default_voice: str
    sample_rate: int

    def synthesize(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def voice_for(self, request: SpeechRequest) -> str:
        """The request's voice (needs the loaded model): OpenAI's voice names pick the model's default voice."""
        voice = request.voice or self.default_voice
        if voice in self.voices:
            return voice
        if voice in OPENAI_VOICES:
            return self.default_voice
        raise BadInput(
            f"unknown voice {voice!r} for model {self.spec.model_id}; available voices: {', '.join(self.voices)}",
            param="voice",
            code="unknown_voice",
        )

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
            raise BadInput(
                f"model {self.spec.model_id} cannot speak this input: {exc}", param="input", code="unspeakable_input"
            ) from exc
        if not produced:
            raise BadInput(
                "'input' holds nothing speakable (no words, digits or letters the voice can read)",
                param="input",
                code="unspeakable_input",
            )

    @staticmethod
    def text_of(request: SpeechRequest) -> str:
        """NFKC turns compatibility characters (superscripts, full-width letters, ligatures) into what they mean."""
        text = unicodedata.normalize("NFKC", request.input)
        if not text.strip():
            raise BadInput("'input' must not be empty", param="input", code="empty_input")
        return text

    def infer(self, request: SpeechRequest, files: Files) -> dict[str, Any]:
        text, voice, fmt = self.text_of(request), self.voice_for(request), request.response_format
        pcm = b"".join(to_pcm16(block) for block in self._blocks(text, voice, request.speed, request.seed))
        return {
            "audio": encode_pcm16(pcm, self.sample_rate, fmt),
            "format": fmt,
            "sample_rate": self.sample_rate,
            "duration": len(pcm) / 2 / self.sample_rate,
        }

    def infer_stream(
        self, request: SpeechRequest, files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any] | bytes]:
        text, voice, fmt = self.text_of(request), self.voice_for(request), request.response_format
        blocks = self._blocks(text, voice, request.speed, request.seed)
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
