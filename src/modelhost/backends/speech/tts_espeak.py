"""Text-to-speech with eSpeak NG (Debian ``espeak-ng``, GPL-3 program run as a separate command): formant
synthesis in 100+ languages, 22.05 kHz mono, no model weights.

Voices are eSpeak language voices (``en-us``, ``en-gb``, ``de``, ``es``, …) with an optional variant
(``en-us+f3``). Options: ``voices`` (names to offer; default every installed non-MBROLA voice),
``default_voice`` (``en-us``), ``words_per_minute`` at speed 1 (175).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelhost.backends.speech.tts_base import SpeechBackend
from modelhost.errors import BackendFault

if TYPE_CHECKING:
    import numpy as np

WAV_HEADER_BYTES = 44


class EspeakSpeech(SpeechBackend):
    requires = ("numpy",)
    extra = "speech"

    def load(self) -> None:
        binary = shutil.which(self.spec.source or "espeak-ng") or shutil.which("espeak-ng")
        if binary is None:
            raise BackendFault(
                "espeak-ng is not installed on the worker host (apt-get install espeak-ng)",
                code="model_files_missing",
            )
        self.binary = binary
        listing = subprocess.run([binary, "--voices"], capture_output=True, text=True, check=True, timeout=30).stdout
        installed: list[str] = []
        for line in listing.splitlines()[1:]:
            fields = line.split()
            # fields: priority, language, age/gender, name, file, ...; MBROLA voices need data we do not install
            usable = len(fields) >= 5 and not fields[4].startswith("mb/") and fields[1] != "variant"
            if usable and fields[1] not in installed:
                installed.append(fields[1])
        wanted = [str(v) for v in self.options.get("voices") or installed]
        self.voices = [v for v in wanted if v.split("+")[0] in installed]
        if not self.voices:
            raise BackendFault("none of the configured espeak-ng voices is installed")
        self.default_voice = str(
            self.options.get("default_voice", "en-us" if "en-us" in self.voices else self.voices[0])
        )
        self.words_per_minute = int(self.options.get("words_per_minute", 175))
        self.sample_rate = 22050

    def synthesize(self, text: str, voice: str, speed: float, seed: int | None) -> Iterator[np.ndarray]:
        import numpy as np

        rate = max(80, min(450, round(self.words_per_minute * speed)))
        proc = subprocess.run(
            [self.binary, "-v", voice, "-s", str(rate), "--stdout", "-b", "1"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {proc.stderr.decode('utf-8', 'replace')[-300:]}")
        pcm = np.frombuffer(proc.stdout[WAV_HEADER_BYTES:], dtype="<i2")
        yield (pcm.astype(np.float32) / 32768.0)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "packages": ["espeak-ng (Debian)"]}
