"""Presentation video: the whole job (.pptx → MP4) against the seed's way, on one 10-slide deck, in one run.

* **job** — ``POST /v1/jobs/presentation-video`` on a real server (hibari warm), wall time from submission to
  ``completed``, plus its stage split from the job's timestamps as seen by polling.
* **seed assembly** — MoviePy (``ImageClip`` per slide with its ``AudioFileClip``, ``concatenate_videoclips``,
  ``write_videofile`` libx264/aac at 24 fps) on the job's own slide PNGs and WAVs. MoviePy lives in the bench
  environment only: pass ``--moviepy-python /path/to/venv/bin/python`` (an interpreter with ``moviepy``).
* **seed whole path** — what the seed does one thing after another: LibreOffice → PDF → PNGs (one pdftoppm run),
  one TTS request per slide in turn (same server, same model; the seed used OpenVoice on a GPU), MoviePy assembly.
* **ffmpeg assembly** — this project's one-pass assembly of the same PNGs and WAVs, for reference.

Usage: ``PYTHONPATH=src python bench/bench_presentation.py --moviepy-python /tmp/moviepy-venv/bin/python``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.decks import SlideSpec, build_deck  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

from modelhost.media.slides import read_deck, render_slides  # noqa: E402
from modelhost.media.video import assemble_video  # noqa: E402

NOTES = [
    "Welcome to the quarterly review. Today we look back at the spring and ahead to the summer.",
    "Sales grew in every region. The north grew fastest, with twelve percent more orders than last year.",
    "[SILENCE]",
    "Our costs stayed flat. Travel went down while cloud spending went up by about the same amount.",
    "Hiring is on plan. We welcomed nine new colleagues, and four more start next month.",
    "The new office opens in June. It has room for forty people and a large meeting room.",
    "Customers told us what they want. Faster answers came first, then better documentation.",
    "We will ship three releases this summer. Each one focuses on speed and stability.",
    "Risks remain. Supply delays could slow the hardware launch by a few weeks.",
    "Thank you for listening. Please send your questions before Friday.",
]
COLORS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (220, 200, 40), (160, 40, 160)]
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

MOVIEPY_SCRIPT = """
import json, sys, time
from moviepy import AudioFileClip, ImageClip, concatenate_videoclips
pngs, wavs, out = json.loads(sys.argv[1])
started = time.perf_counter()
clips = []
for png, wav in zip(pngs, wavs):
    audio = AudioFileClip(wav)
    clips.append(ImageClip(png).with_duration(audio.duration).with_audio(audio))
video = concatenate_videoclips(clips, method="compose")
video.write_videofile(out, fps=24, codec="libx264", audio_codec="aac", logger=None)
print(time.perf_counter() - started)
"""


def run_job(http: Any, deck: Path) -> tuple[float, dict[str, Any], dict[str, float]]:
    started = time.perf_counter()
    job = http.post("/v1/jobs/presentation-video", files={"file": (deck.name, deck.read_bytes(), PPTX)}).json()
    stages: dict[str, float] = {}
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
        job = http.get(f"/v1/jobs/{job['id']}").json()
        if job["stage"] and job["stage"] not in stages:
            stages[job["stage"]] = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if job["status"] != "completed":
        raise SystemExit(f"job ended {job['status']}: {job.get('error')}")
    return elapsed, job, stages


def moviepy_assembly(python: str, pngs: list[Path], wavs: list[Path], out: Path) -> float:
    payload = json.dumps([[str(p) for p in pngs], [str(w) for w in wavs], str(out)])
    proc = subprocess.run([python, "-c", MOVIEPY_SCRIPT, payload], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"MoviePy failed (is moviepy installed for {python}?):\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moviepy-python", default=sys.executable, help="an interpreter that has moviepy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-presentation-") as folder:
        root = Path(folder)
        slides = tuple(SlideSpec(f"Slide {i + 1}", n, COLORS[i % 5], body="Key points") for i, n in enumerate(NOTES))
        deck = build_deck(root / "deck.pptx", slides)
        server = ServerProcess(root / "data").start()
        try:
            with server.client(timeout=600) as http:
                # warm the TTS worker: the job is measured with a loaded model, as a busy server has it
                http.post("/v1/audio/speech", json={"model": "hibari", "input": "Warm up.", "response_format": "wav"})
                job_seconds, job, stages = run_job(http, deck)
                count = job["result"]["slides"]
                pngs, wavs = [], []
                for i in range(1, count + 1):
                    for kind, suffix, bucket in (("slides", "png", pngs), ("audio", "wav", wavs)):
                        target = root / f"{kind}-{i:02d}.{suffix}"
                        target.write_bytes(http.get(f"/v1/jobs/{job['id']}/artifacts/{kind}-{i:02d}.{suffix}").content)
                        bucket.append(target)

                # the seed's whole path, one thing after another
                started = time.perf_counter()
                notes = read_deck(deck)
                asyncio.run(render_slides(deck, notes, root / "seed-slides", (1280, 720), parallel=1))
                render_seconds = time.perf_counter() - started
                started = time.perf_counter()
                for slide in notes.slides:
                    if not slide.silent:
                        payload = {"model": "hibari", "input": slide.notes, "response_format": "wav"}
                        http.post("/v1/audio/speech", json=payload).raise_for_status()
                tts_seconds = time.perf_counter() - started
        finally:
            server.stop()
        moviepy_seconds = moviepy_assembly(args.moviepy_python, pngs, wavs, root / "moviepy.mp4")
        started = time.perf_counter()
        narrations = [w.read_bytes() for w in wavs]
        asyncio.run(assemble_video(pngs, narrations, root / "ffmpeg.mp4", (1280, 720)))
        ffmpeg_seconds = time.perf_counter() - started
    seed_total = render_seconds + tts_seconds + moviepy_seconds
    duration = job["result"]["duration"]
    print(f"deck: {count} slides, {duration:.1f} s of narration")
    print("| path | seconds | per slide |")
    print("|---|---|---|")
    print(f"| job, .pptx → MP4 (warm TTS) | {job_seconds:.1f} | {job_seconds / count:.2f} |")
    split = ", ".join(f"{name} at {seconds:.1f} s" for name, seconds in stages.items())
    print(f"| — stages first seen: {split} | | |")
    print(f"| ffmpeg one-pass assembly alone | {ffmpeg_seconds:.1f} | {ffmpeg_seconds / count:.2f} |")
    print(f"| seed: MoviePy assembly alone | {moviepy_seconds:.1f} | {moviepy_seconds / count:.2f} |")
    print(
        f"| seed: whole path (soffice+pdftoppm {render_seconds:.1f} + serial TTS {tts_seconds:.1f} + MoviePy) | "
        f"{seed_total:.1f} | {seed_total / count:.2f} |"
    )
    print(
        f"\njob vs MoviePy assembly alone: {moviepy_seconds / job_seconds:.2f}× ; vs seed whole path: "
        f"{seed_total / job_seconds:.2f}×"
    )


if __name__ == "__main__":
    main()
