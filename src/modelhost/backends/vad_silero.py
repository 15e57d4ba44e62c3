"""Voice activity detection with the Silero ONNX model bundled in faster-whisper.

Options / payload: ``threshold`` (0.5), ``min_speech_duration_ms`` (250), ``min_silence_duration_ms`` (300),
``speech_pad_ms`` (30). Files: ``file`` — any audio ffmpeg decodes. Result: ``segments`` of ``{start, end}`` in
seconds and ``duration``.
"""

from __future__ import annotations

from typing import Any

from modelhost.backends.base import Backend
from modelhost.media.audio import SAMPLE_RATE, decode_audio
from modelhost.worker.protocol import InvalidInput

DEFAULTS: dict[str, float] = {
    "threshold": 0.5,
    "min_speech_duration_ms": 250,
    "min_silence_duration_ms": 300,
    "speech_pad_ms": 30,
}


class SileroVad(Backend):
    def load(self) -> None:
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # loads (and caches) the bundled ONNX model now rather than on the first request

    def infer(self, payload: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if "file" not in files:
            raise InvalidInput("no audio file in the request", param="file")
        settings = {**DEFAULTS, **{k: self.options[k] for k in DEFAULTS if k in self.options}}
        for key in DEFAULTS:
            if payload.get(key) is not None:
                settings[key] = float(payload[key])
        if not 0.0 < settings["threshold"] < 1.0:
            raise InvalidInput("threshold must be between 0 and 1", param="threshold")
        audio = decode_audio(files["file"])
        duration = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return {"segments": [], "duration": 0.0}
        options = VadOptions(
            threshold=settings["threshold"],
            min_speech_duration_ms=int(settings["min_speech_duration_ms"]),
            min_silence_duration_ms=int(settings["min_silence_duration_ms"]),
            speech_pad_ms=int(settings["speech_pad_ms"]),
        )
        stamps = get_speech_timestamps(audio, vad_options=options, sampling_rate=SAMPLE_RATE)
        segments = [
            {"start": round(int(s["start"]) / SAMPLE_RATE, 3), "end": round(int(s["end"]) / SAMPLE_RATE, 3)}
            for s in stamps
        ]
        return {"segments": segments, "duration": duration}

    def info(self) -> dict[str, Any]:
        return {"packages": ["faster-whisper", "onnxruntime"], "sample_rate": SAMPLE_RATE}
