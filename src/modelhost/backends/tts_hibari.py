"""Text-to-speech with hibari-tts (Apache-2.0): a 7.9 MB ONNX voice, 24 kHz mono.

Only voices present on disk are offered — the bundled "heart" and any a user copied into hibari's cache; this
backend never downloads one. Options: ``voices`` (names to offer; default all present), ``default_voice``.
Payload: ``input``, ``voice``, ``response_format`` (wav | mp3 | flac | opus | aac | pcm), ``speed`` (0.25–4).
``infer_stream`` yields ``{"audio": base64}`` chunks: per sentence for wav/pcm, encoded blocks otherwise.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

from modelhost.backends.base import Backend, resolve_source
from modelhost.media.audio import ENCODINGS, encode_pcm16, to_pcm16, wav_header
from modelhost.worker.protocol import InvalidInput

FORMATS = ("wav", "pcm", *ENCODINGS)
CHUNK_BYTES = 32 * 1024


class HibariSpeech(Backend):
    supports_streaming = True

    def load(self) -> None:
        from hibari import SAMPLE_RATE, Hibari
        from hibari.voices import VOICES, voice_path

        resolve_source(self.spec.source)  # a clear 503 when the package is missing
        wanted = self.options.get("voices") or list(VOICES)
        present = []
        for name in wanted:
            try:
                voice_path(name, download_missing=False)
            except (FileNotFoundError, ValueError):
                continue
            present.append(str(name))
        if not present:
            raise InvalidInput("no hibari voice is installed", status=503, code="model_files_missing")
        self.sample_rate = int(SAMPLE_RATE)
        self.voices = present
        self.default_voice = str(self.options.get("default_voice", present[0]))
        self._engines: dict[str, Any] = {}
        self._factory = Hibari
        self._engine(self.default_voice)

    def _engine(self, voice: str) -> Any:
        if voice not in self._engines:
            self._engines[voice] = self._factory(voice=voice, threads=self.spec.threads)
        return self._engines[voice]

    def _check(self, payload: dict[str, Any]) -> tuple[str, str, str, float]:
        text = str(payload.get("input") or "")
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

    def infer(self, payload: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        import numpy as np

        text, voice, fmt, speed = self._check(payload)
        parts = list(self._engine(voice).stream(text, speed=speed, seed=payload.get("seed")))
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        audio = encode_pcm16(to_pcm16(samples), self.sample_rate, fmt)
        return {
            "audio": base64.b64encode(audio).decode("ascii"),
            "format": fmt,
            "sample_rate": self.sample_rate,
            "duration": len(samples) / self.sample_rate,
        }

    def infer_stream(
        self, payload: dict[str, Any], files: dict[str, bytes], cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        text, voice, fmt, speed = self._check(payload)
        engine = self._engine(voice)
        sentences = engine.stream(text, speed=speed, seed=payload.get("seed"))
        if fmt in ("wav", "pcm"):
            yield {"audio": base64.b64encode(wav_header(self.sample_rate) if fmt == "wav" else b"").decode("ascii")}
            for samples in sentences:
                if cancelled.is_set():
                    return
                yield {"audio": base64.b64encode(to_pcm16(samples)).decode("ascii")}
            return
        pcm = bytearray()
        for samples in sentences:
            if cancelled.is_set():
                return
            pcm += to_pcm16(samples)
        encoded = encode_pcm16(bytes(pcm), self.sample_rate, fmt)
        for start in range(0, len(encoded), CHUNK_BYTES):
            yield {"audio": base64.b64encode(encoded[start : start + CHUNK_BYTES]).decode("ascii")}

    def info(self) -> dict[str, Any]:
        return {"voices": self.voices, "sample_rate": self.sample_rate, "packages": ["hibari-tts", "onnxruntime"]}
