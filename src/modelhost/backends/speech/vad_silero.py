"""Voice activity detection with the Silero ONNX model bundled in faster-whisper.

Options / request (``modelhost.schemas.voice_activity.VadRequest``): ``threshold`` (0.5),
``min_speech_duration_ms`` (250), ``min_silence_duration_ms`` (300), ``speech_pad_ms`` (30). Files: ``file`` — any
audio ffmpeg decodes. Result: ``VadResult`` (``segments`` of ``{start, end}`` in seconds and ``duration``).
"""

from __future__ import annotations

from typing import Any

from modelhost.backends.base import Backend, Files, require_file
from modelhost.media.audio import SAMPLE_RATE, decode_audio
from modelhost.schemas.voice_activity import Span, VadRequest, VadResult

DEFAULTS: dict[str, float] = {
    "threshold": 0.5,
    "min_speech_duration_ms": 250,
    "min_silence_duration_ms": 300,
    "speech_pad_ms": 30,
}


class SileroVad(Backend[VadRequest]):
    requires = ("faster_whisper", "onnxruntime", "numpy")
    extra = "speech"
    request_type = VadRequest

    def load(self) -> None:
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # loads (and caches) the bundled ONNX model now rather than on the first request

    def infer(self, request: VadRequest, files: Files) -> VadResult:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        settings = {**DEFAULTS, **{k: float(self.options[k]) for k in DEFAULTS if k in self.options}}
        settings |= {k: float(v) for k, v in request.model_dump(include=set(DEFAULTS)).items() if v is not None}
        audio = decode_audio(require_file(files))
        duration = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return VadResult(segments=[], duration=0.0)
        options = VadOptions(
            threshold=settings["threshold"],
            min_speech_duration_ms=int(settings["min_speech_duration_ms"]),
            min_silence_duration_ms=int(settings["min_silence_duration_ms"]),
            speech_pad_ms=int(settings["speech_pad_ms"]),
        )
        stamps = get_speech_timestamps(audio, vad_options=options, sampling_rate=SAMPLE_RATE)
        segments = [
            Span(start=round(int(s["start"]) / SAMPLE_RATE, 3), end=round(int(s["end"]) / SAMPLE_RATE, 3))
            for s in stamps
        ]
        return VadResult(segments=segments, duration=duration)

    def info(self) -> dict[str, Any]:
        return {"packages": ["faster-whisper", "onnxruntime"], "sample_rate": SAMPLE_RATE}
