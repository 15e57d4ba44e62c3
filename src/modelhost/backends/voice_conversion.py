"""What every voice-conversion backend shares: ``convert(audio, reference) → audio`` behind the worker contract.

Task ``voice-conversion``. Files: ``file`` (the speech to convert) and ``reference`` (a short recording of the
target voice), any audio ffmpeg decodes. Payload: ``response_format`` (wav | pcm | mp3 | flac | opus | aac,
default wav). Result: ``audio`` (base64), ``format``, ``sample_rate``, ``duration`` and the backend's ``details``.

A subclass sets ``sample_rate`` in ``load()`` and implements ``convert`` on float32 mono samples at that rate.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

from modelhost.backends.base import Backend, Files
from modelhost.errors import BadInput
from modelhost.media.audio import ENCODINGS, decode_audio, encode_pcm16, to_pcm16
from modelhost.schemas.voice_conversion import VoiceConversionRequest

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("wav", "pcm", *ENCODINGS)
MIN_REFERENCE_SECONDS = 1.0
MAX_CACHED_REFERENCES = 8


class VoiceConversionBackend(Backend[VoiceConversionRequest]):
    request_type: ClassVar[Any] = VoiceConversionRequest
    requires: ClassVar[tuple[str, ...]] = ("numpy",)
    extra: ClassVar[str] = "speech"
    sample_rate: int = 24_000

    def convert(self, audio: np.ndarray, reference: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Speech ``audio`` re-voiced like the analysed ``reference`` (see ``analyse_reference``)."""
        raise NotImplementedError

    def analyse_reference(self, reference: np.ndarray) -> Any:
        """Whatever ``convert`` needs from the reference recording; cached per distinct reference."""
        return reference

    def _reference(self, data: bytes) -> Any:
        cache: OrderedDict[str, Any] = self.__dict__.setdefault("_reference_cache", OrderedDict())
        key = hashlib.sha256(data).hexdigest()
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        samples = decode_audio(data, self.sample_rate)
        if len(samples) < MIN_REFERENCE_SECONDS * self.sample_rate:
            raise BadInput(
                f"the reference recording must hold at least {MIN_REFERENCE_SECONDS:g} s of speech",
                param="reference",
                code="reference_too_short",
            )
        analysed = self.analyse_reference(samples)
        cache[key] = analysed
        while len(cache) > MAX_CACHED_REFERENCES:
            cache.popitem(last=False)
        return analysed

    def infer(self, request: VoiceConversionRequest, files: Files) -> dict[str, Any]:
        if not files.get("file"):
            raise BadInput("the speech to convert is missing (file part 'file')", param="file")
        if not files.get("reference"):
            raise BadInput("the reference recording is missing (file part 'reference')", param="reference")
        fmt = request.response_format
        reference = self._reference(files["reference"])
        source = decode_audio(files["file"], self.sample_rate)
        if len(source) == 0:
            raise BadInput("the speech to convert is empty", param="file", code="empty_audio")
        converted, details = self.convert(source, reference)
        pcm = to_pcm16(converted)
        return {
            "audio": base64.b64encode(encode_pcm16(pcm, self.sample_rate, fmt)).decode("ascii"),
            "format": fmt,
            "sample_rate": self.sample_rate,
            "duration": len(pcm) / 2 / self.sample_rate,
            "details": details,
        }

    def info(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate}
