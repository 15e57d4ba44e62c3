"""Peak memory of a worker (and the serve process) for long audio through a real server.

Makes 16 kHz audio with ffmpeg — a flite talk, then silence (``--fill silence``, default), or the talk repeated
for the whole length (``--fill speech``) — as a small Opus file, sends it to each route of ``--routes`` (default:
VAD and whisper tiny.en; ``embeddings`` and ``diarization`` for the speaker routes), and prints each worker's peak
resident memory (VmHWM from /proc) and the serve process's. Run against another checkout with
``--src /path/to/src`` to compare (e.g. before/after a change):

    python bench/bench_audio_memory.py [--seconds 3600] [--src src]
    python bench/bench_audio_memory.py --seconds 1200 --fill speech --routes embeddings,diarization
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.audio import SENTENCES, flite_wav  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


ROUTES = {
    "vad": ("/v1/audio/vad", "silero-vad"),
    "transcriptions": ("/v1/audio/transcriptions", "whisper-tiny.en"),
    "embeddings": ("/v1/audio/embeddings", "resemblyzer"),
    "diarization": ("/v1/audio/diarization", "diarizer"),
}


def make_audio(folder: Path, seconds: int, fill: str = "silence") -> Path:
    talk = flite_wav(" ".join(SENTENCES), "slt", folder / "talk.wav")
    target = folder / f"long-{seconds}-{fill}.ogg"
    if fill == "speech":  # two voices taking turns, repeated for the whole length
        other = flite_wav(" ".join(reversed(SENTENCES)), "rms", folder / "other.wav")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(talk), "-stream_loop", "-1",
             "-i", str(other), "-filter_complex",
             "[0]aresample=16000,aformat=channel_layouts=mono,atrim=duration=20[a];"
             "[1]aresample=16000,aformat=channel_layouts=mono,atrim=duration=20[b];"
             "[a][b]concat=n=2:v=0:a=1,aloop=loop=-1:size=640000,"
             f"atrim=duration={seconds}", "-ac", "1", "-c:a", "libopus", "-b:a", "12k", str(target)],
            check=True,
        )  # fmt: skip
        return target
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(talk), "-f", "lavfi", "-i",
         f"anullsrc=r=16000:cl=mono:d={seconds}", "-filter_complex",
         "[0]aresample=16000,aformat=channel_layouts=mono[a];[1]anull[b];[a][b]concat=n=2:v=0:a=1,"
         f"atrim=duration={seconds}", "-ac", "1", "-c:a", "libopus", "-b:a", "12k", str(target)],
        check=True,
    )  # fmt: skip
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--src", default=None, help="a src/ directory to import modelhost from")
    parser.add_argument("--fill", choices=("silence", "speech"), default="silence")
    parser.add_argument("--routes", default="vad,transcriptions", help=f"comma-separated, of {', '.join(ROUTES)}")
    args = parser.parse_args()
    if args.src:
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve()) + os.pathsep + os.environ.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as folder:
        audio = make_audio(Path(folder), args.seconds, args.fill)
        print(f"audio: {args.seconds} s ({args.fill}), {audio.stat().st_size / 1e6:.1f} MB opus")  # noqa: T201
        server = ServerProcess(Path(folder) / "data", env={"MODELHOST_MAX_AUDIO_SECONDS": "100000"}).start()
        try:
            with server.client() as http:  # whisper on an hour of audio runs longer than the default 300 s
                http.patch("/v1/settings", json={"worker_request_timeout_seconds": 3600}).raise_for_status()
            for route, model in (ROUTES[name] for name in args.routes.split(",")):
                started = time.perf_counter()
                with server.client(timeout=3600) as http, audio.open("rb") as f:
                    response = http.post(route, files={"file": ("long.ogg", f)}, data={"model": model})
                elapsed = time.perf_counter() - started
                worker = server.worker(model)
                body = response.json()
                if worker is None:
                    print(f"{route}: HTTP {response.status_code} in {elapsed:.0f} s; worker gone: {body}")  # noqa: T201
                    continue
                summary = (
                    f"{len(body.get('segments', []))} segments, {body.get('num_speakers', '-')} speakers, "
                    f"speech {body.get('speech_duration', '-')} s, text {body.get('text', '')[:300]!r}"
                    if response.status_code == 200
                    else response.text[:200]
                )
                print(  # noqa: T201
                    f"{route}: HTTP {response.status_code} in {elapsed:.0f} s; worker peak RSS "
                    f"{peak_rss_mib(int(worker['pid'])):.0f} MiB; {summary}"
                )
            assert server.process is not None
            print(f"serve process peak RSS {peak_rss_mib(server.process.pid):.0f} MiB")  # noqa: T201
        finally:
            server.stop()


if __name__ == "__main__":
    main()
