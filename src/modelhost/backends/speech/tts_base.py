"""What every text-to-speech backend shares: request checks, output formats and streaming.

A subclass sets ``voices``, ``default_voice`` and ``sample_rate`` in ``load()`` and implements ``synthesize``, which
yields float32 mono sample blocks (a sentence each, or the whole text). Request:
``modelhost.schemas.text_to_speech.SpeechRequest``; an OpenAI voice name (``alloy``…) picks the default voice.
``infer_stream`` yields ``{"audio": base64}`` chunks: per block for wav/pcm, encoded pieces otherwise.
"""

from __future__ import annotations

import base64
import threading
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

    def infer(self, request: SpeechRequest, files: Files) -> dict[str, Any]:
        voice, fmt = self.voice_for(request), request.response_format
        pcm = b"".join(to_pcm16(block) for block in self.synthesize(request.input, voice, request.speed, request.seed))
        return {
            "audio": base64.b64encode(encode_pcm16(pcm, self.sample_rate, fmt)).decode("ascii"),
            "format": fmt,
            "sample_rate": self.sample_rate,
            "duration": len(pcm) / 2 / self.sample_rate,
        }

    def infer_stream(
        self, request: SpeechRequest, files: Files, cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        voice, fmt = self.voice_for(request), request.response_format
        blocks = self.synthesize(request.input, voice, request.speed, request.seed)
        if fmt in ("wav", "pcm"):
            yield {"audio": base64.b64encode(wav_header(self.sample_rate) if fmt == "wav" else b"").decode("ascii")}
            for samples in blocks:
                if cancelled.is_set():
                    return
                yield {"audio": base64.b64encode(to_pcm16(samples)).decode("ascii")}
            return
        pcm = bytearray()
        for samples in blocks:
            if cancelled.is_set():
                return
            pcm += to_pcm16(samples)
        encoded = encode_pcm16(bytes(pcm), self.sample_rate, fmt)
        for start in range(0, len(encoded), CHUNK_BYTES):
            yield {"audio": base64.b64encode(encoded[start : start + CHUNK_BYTES]).decode("ascii")}

    def info(self) -> dict[str, Any]:
        return {"voices": self.voices, "sample_rate": self.sample_rate}
