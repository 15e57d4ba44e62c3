"""Scale-out costs, measured in one run on this machine.

Prints:
* a meeting-transcription job (a 4-turn, ~14 s two-voice recording) through Celery — front with
  ``--no-local-workers``, two ``modelhost node`` processes, PostgreSQL, Redis, S3 through moto (an S3 emulator) —
  vs the local executor of one ``modelhost serve`` (SQLite, local blobs); goal ≤ 1.1×;
* a presentation-video job (the 4 visible slides of the tests' standard deck): its per-slide narration is a Celery
  chord (one task per slide, spread over both nodes) under the Celery executor, an in-process gather locally;
* the added latency (p50, p90) of a one-sentence embedding through a node (front → Celery task on Redis → node's
  coordinator → worker → reply on a Redis list) over the same request to a server whose worker is local;
* the same for a transcription of the ~14 s recording (well under the default ``broker_inline_file_bytes``, so it
  travels inside the task; a larger upload goes to the blob store and the task carries its key).

Both setups run at once and the measurements alternate between them, so a shared machine's changing load weighs on
both alike. Needs Redis and PostgreSQL on 127.0.0.1 (as the cluster test). Run: ``python bench/bench_cluster.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from tests.support.cluster import FRONT_COMMAND, NodeProcess, aws_env, fresh_postgres, moto_s3, redis_url_or_skip  # noqa: E402
from tests.support.decks import build_deck  # noqa: E402
from tests.support.diarization import conversation  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TURNS = [
    ("slt", "Good morning, thanks for joining the planning call today."),
    ("rms", "Happy to be here. Shall we start with the budget?"),
    ("slt", "Yes. The new office will cost more than we expected."),
    ("rms", "Then we should ask for three quotes before we decide."),
]
EMBEDDER = "all-minilm-l6-v2-onnx"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


def meeting_seconds(server: ServerProcess, recording: Path) -> float:
    return job_seconds(
        server,
        "meeting-transcription",
        (recording.name, recording.read_bytes(), "audio/flac"),
        {"model": "whisper-tiny.en", "num_speakers": "2"},
    )


def presentation_seconds(server: ServerProcess, deck: Path) -> float:
    return job_seconds(
        server, "presentation-video", (deck.name, deck.read_bytes(), PPTX), {"silence_seconds": "0.8", "width": "640"}
    )


def job_seconds(server: ServerProcess, kind: str, upload: tuple[str, bytes, str], data: dict[str, str]) -> float:
    with server.client() as client:
        started = time.perf_counter()
        resp = client.post(f"/v1/jobs/{kind}", files={"file": upload}, data=data)
        resp.raise_for_status()
        job_id = resp.json()["id"]
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    if job["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    return elapsed


def embedding_latencies(server: ServerProcess, n: int, warm: bool = True) -> list[float]:
    body = {"model": EMBEDDER, "input": "The quick brown fox jumps over the lazy dog."}
    times: list[float] = []
    with server.client() as client:
        for _ in range(5 if warm else 0):
            client.post("/v1/embeddings", json=body).raise_for_status()  # warm-up: worker started, caches filled
        for _ in range(n):
            started = time.perf_counter()
            client.post("/v1/embeddings", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def transcription_latencies(server: ServerProcess, recording: Path, n: int, warm: bool = True) -> list[float]:
    upload = (recording.name, recording.read_bytes(), "audio/flac")
    data = {"model": "whisper-tiny.en", "response_format": "json"}
    times: list[float] = []
    with server.client() as client:
        if warm:
            client.post("/v1/audio/transcriptions", files={"file": upload}, data=data).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            client.post("/v1/audio/transcriptions", files={"file": upload}, data=data).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def added(label: str, local: list[float], node: list[float]) -> None:
    local_p50, node_p50 = percentile(local, 0.5), percentile(node, 0.5)
    local_p90, node_p90 = percentile(local, 0.9), percentile(node, 0.9)
    print(label)
    print(f"  local worker     p50 {local_p50 * 1000:7.2f} ms   p90 {local_p90 * 1000:7.2f} ms")
    print(f"  through a node   p50 {node_p50 * 1000:7.2f} ms   p90 {node_p90 * 1000:7.2f} ms")
    print(
        f"  added            p50 {(node_p50 - local_p50) * 1000:7.2f} ms   p90 {(node_p90 - local_p90) * 1000:7.2f} ms"
    )


def ratio(label: str, local: list[float], cluster: list[float]) -> None:
    local_median, cluster_median = statistics.median(local), statistics.median(cluster)
    print(label)
    print(f"  local executor   {local_median:6.2f} s   {' '.join(f'{t:.2f}' for t in local)}")
    print(f"  Celery, 2 nodes  {cluster_median:6.2f} s   {' '.join(f'{t:.2f}' for t in cluster)}")
    print(f"  ratio            {cluster_median / local_median:6.2f}x (goal <= 1.1x)")
    # Each cluster job ran right after its local one: the median of those pairs' ratios weighs less on a load that
    # changes between the start and the end of the run.
    paired = statistics.median(node / alone for alone, node in zip(local, cluster, strict=True))
    print(f"  paired ratio     {paired:6.2f}x (median of job-by-job ratios)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5, help="meeting and presentation jobs per side (median reported)")
    parser.add_argument("--requests", type=int, default=200, help="embedding requests per side")
    parser.add_argument("--transcriptions", type=int, default=10, help="transcription requests per side")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    recording, _ = conversation(TURNS, 0.5, root, "meeting")
    deck = build_deck(root / "deck.pptx")
    preload_a = ["--queues", "jobs,model.hibari", "--preload", "whisper-tiny.en"]
    preload_b = ["--queues", "jobs", "--preload", f"diarizer,resemblyzer,{EMBEDDER}"]

    # Both run at once and the measurements alternate between them (block by block, job by job), so the load of a
    # shared machine drifting during the run weighs on both sides alike.
    broker_url = redis_url_or_skip()
    with fresh_postgres() as database_url, moto_s3(root) as endpoint:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        creds = aws_env()
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name=creds["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
        env = {
            **creds,
            "MODELHOST_BROKER_URL": broker_url,
            "MODELHOST_DATABASE_URL": database_url,
            "MODELHOST_STORAGE__URL": f"s3://{bucket}/bench",
            "MODELHOST_STORAGE__ENDPOINT_URL": endpoint,
        }
        local = ServerProcess(root / "single").start()
        front = ServerProcess(root / "front", env, args=FRONT_COMMAND[2:]).start()
        nodes = [
            NodeProcess("bench-a", root / "node-a", env, preload_a),
            NodeProcess("bench-b", root / "node-b", env, preload_b),
        ]
        sides = {"local": local, "node": front}
        times: dict[str, dict[str, list[float]]] = {
            k: {"embed": [], "asr": [], "meeting": [], "slides": []} for k in sides
        }
        try:
            for node in nodes:
                node.start(broker_url)
            for server in sides.values():  # warm-up: every model loaded, caches filled
                embedding_latencies(server, 5)
                transcription_latencies(server, recording, 1)
                meeting_seconds(server, recording)
                presentation_seconds(server, deck)
            blocks = 10
            for _ in range(blocks):
                for side, server in sides.items():
                    times[side]["embed"] += embedding_latencies(server, max(1, args.requests // blocks), warm=False)
            for _ in range(args.transcriptions):
                for side, server in sides.items():
                    times[side]["asr"] += transcription_latencies(server, recording, 1, warm=False)
            for _ in range(args.jobs):
                for side, server in sides.items():
                    times[side]["meeting"].append(meeting_seconds(server, recording))
                    times[side]["slides"].append(presentation_seconds(server, deck))
        finally:
            for node in nodes:
                node.stop()
            front.stop()
            local.stop()
    local_latency, node_latency = times["local"]["embed"], times["node"]["embed"]
    local_transcriptions, node_transcriptions = times["local"]["asr"], times["node"]["asr"]
    local_jobs, cluster_jobs = times["local"]["meeting"], times["node"]["meeting"]
    local_presentations, cluster_presentations = times["local"]["slides"], times["node"]["slides"]

    added(f"one-sentence embedding ({EMBEDDER}), {args.requests} sequential requests:", local_latency, node_latency)
    added(
        f"transcription of ~14 s (whisper-tiny.en), {args.transcriptions} sequential requests (upload in the task):",
        local_transcriptions,
        node_transcriptions,
    )
    ratio(f"meeting job (~14 s of audio), median of {args.jobs} (alternating):", local_jobs, cluster_jobs)
    ratio(
        f"presentation job (4 slides, narration as a chord), median of {args.jobs} (alternating):",
        local_presentations,
        cluster_presentations,
    )


if __name__ == "__main__":
    main()
