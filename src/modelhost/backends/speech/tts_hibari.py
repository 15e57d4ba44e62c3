"""Text-to-speech with hibari-tts (Apache-2.0): a 7.9 MB ONNX voice, 24 kHz mono.

Only voices present on disk are offered — the bundled "heart" and any a user copied into hibari's cache; this
backend never downloads one. Options: ``voices`` (names to offer; default all present), ``default_voice``.
Synthesis streams sentence by sentence (see ``modelhost.backends.speech.tts_base`` for formats and payload).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelhost.backends.base import resolve_source
from modelhost.backends.speech.tts_base import SpeechBackend
from modelhost.errors import BackendFault

if TYPE_CHECKING:
    import numpy as np

#: hibari's text-to-phoneme front ends (lexicons and tagger: 0.7 s to read), one per accent (British or not), shared
#: by the voices of a worker — and built once in the zygote, so forked workers inherit them.
_G2P: dict[bool, Any] = {}


def _g2p(british: bool) -> Any:
    if british not in _G2P:
        from hibari.g2p import G2P

        _G2P[british] = G2P(british=british)
    return _G2P[british]


class HibariSpeech(SpeechBackend):
    requires = ("hibari", "numpy")
    extra = "speech"

    @classmethod
    def prepare_zygote(cls) -> None:
        """In the zygote: the American-English front end (pure Python data; its OOV network, which needs
        onnxruntime, stays lazy)."""
        _g2p(british=False)

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
            raise BackendFault("no hibari voice is installed", code="model_files_missing")
        self.sample_rate = int(SAMPLE_RATE)
        self.voices = present
        self.default_voice = str(self.options.get("default_voice", present[0]))
        self._engines: dict[str, Any] = {}
        self._factory = Hibari
        self._engine(self.default_voice)

    def _engine(self, voice: str) -> Any:
        if voice not in self._engines:
            from hibari.voices import VOICES

            british = bool(VOICES.get(voice, {}).get("british"))
            self._engines[voice] = self._factory(voice=voice, threads=self.spec.threads, g2p=_g2p(british))
        return self._engines[voice]

    def synthesize(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        yield from self._engine(voice).stream(text, speed=speed, seed=seed)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "packages": ["hibari-tts", "onnxruntime"]}
