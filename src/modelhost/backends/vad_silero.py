"""Voice activity detection with the Silero ONNX model bundled in faster-whisper.

Options / payload: ``threshold`` (0.5), ``min_speech_duration_ms`` (250), ``min_silence_duration_ms`` (300),
``speech_pad_ms`` (30). Files: ``file`` — any audio ffmpeg decodes, read in windows of ``window_seconds``
(option, default 600) so memory stays flat. Result: ``segments`` of ``{start, end}`` in
seconds and ``duration``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.backends.base import Backend
from modelhost.media.audio import SAMPLE_RATE, WINDOW_SECONDS, audio_windows
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

    def infer(self, payload: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if "file" not in files:
            raise InvalidInput("no audio file in the request", param="file")
        settings = {**DEFAULTS, **{k: self.options[k] for k in DEFAULTS if k in self.options}}
        for key in DEFAULTS:
            if payload.get(key) is not None:
                settings[key] = float(payload[key])
        if not 0.0 < settings["threshold"] < 1.0:
            raise InvalidInput("threshold must be between 0 and 1", param="threshold")
        options = VadOptions(
            threshold=settings["threshold"],
            min_speech_duration_ms=int(settings["min_speech_duration_ms"]),
            min_silence_duration_ms=int(settings["min_silence_duration_ms"]),
            speech_pad_ms=int(settings["speech_pad_ms"]),
        )
        window_seconds = float(self.options.get("window_seconds", WINDOW_SECONDS))
        segments: list[dict[str, float]] = []
        samples = 0
        for offset, audio in audio_windows(
            files["file"], window_seconds=window_seconds, max_seconds=self.spec.max_audio_seconds
        ):
            samples += len(audio)
            stamps = get_speech_timestamps(audio, vad_options=options, sampling_rate=SAMPLE_RATE)
            for stamp in stamps:
                start = round(int(stamp["start"]) / SAMPLE_RATE + offset, 3)
                end = round(int(stamp["end"]) / SAMPLE_RATE + offset, 3)
                if segments and start - segments[-1]["end"] < 0.05:  # speech running across a window edge
                    segments[-1]["end"] = end
                else:
                    segments.append({"start": start, "end": end})
        return {"segments": segments, "duration": samples / SAMPLE_RATE}

    def info(self) -> dict[str, Any]:
        return {"packages": ["faster-whisper", "onnxruntime"], "sample_rate": SAMPLE_RATE}
