"""Scale-out costs, measured in one run on this machine.

Prints:
* a meeting-transcription job (a 4-turn, ~14 s two-voice recording) through Celery — front with
  ``--no-local-workers``, two ``modelhost node`` processes, PostgreSQL, Redis, S3 through moto (an S3 emulator) —
  vs the local executor of one ``modelhost serve`` (SQLite, local blobs); goal ≤ 1.1×;
* the added latency (p50, p90) of a one-sentence embedding through a node (front → Celery task on Redis → node's
  coordinator → worker → reply on a Redis list) over the same request to a server whose worker is local.

Needs Redis and PostgreSQL on 127.0.0.1 (as the cluster test). Run: ``python bench/bench_cluster.py``.
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


from tests.support.cluster import NodeProcess, aws_env, fresh_postgres, moto_s3, redis_url_or_skip  # noqa: E402
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


def meeting_seconds(server: ServerProcess, recording: Path) -> float:
    with server.client() as client:
        started = time.perf_counter()
        with recording.open("rb") as audio:
            resp = client.post(
                "/v1/jobs/meeting-transcription",
                files={"file": (recording.name, audio, "audio/flac")},
                data={"model": "whisper-tiny.en", "num_speakers": "2"},
            )
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


def embedding_latencies(server: ServerProcess, n: int) -> list[float]:
    body = {"model": EMBEDDER, "input": "The quick brown fox jumps over the lazy dog."}
    times: list[float] = []
    with server.client() as client:
        for _ in range(5):
            client.post("/v1/embeddings", json=body).raise_for_status()  # warm-up: worker started, caches filled
        for _ in range(n):
            started = time.perf_counter()
            client.post("/v1/embeddings", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="meeting jobs per side (median reported)")
    parser.add_argument("--requests", type=int, default=200, help="embedding requests per side")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    recording, _ = conversation(TURNS, 0.5, root, "meeting")
    preload_a = ["--queues", "jobs", "--preload", "whisper-tiny.en"]
    preload_b = ["--queues", "jobs", "--preload", f"diarizer,resemblyzer,{EMBEDDER}"]

    local = ServerProcess(root / "single").start()
    try:
        local_latency = embedding_latencies(local, args.requests)
        meeting_seconds(local, recording)  # warm-up: every model loaded
        local_jobs = [meeting_seconds(local, recording) for _ in range(args.jobs)]
    finally:
        local.stop()

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
        front = ServerProcess(root / "front", env, args=("--no-local-workers",)).start()
        nodes = [
            NodeProcess("bench-a", root / "node-a", env, preload_a),
            NodeProcess("bench-b", root / "node-b", env, preload_b),
        ]
        try:
            for node in nodes:
                node.start(broker_url)
            node_latency = embedding_latencies(front, args.requests)
            meeting_seconds(front, recording)  # warm-up
            cluster_jobs = [meeting_seconds(front, recording) for _ in range(args.jobs)]
        finally:
            for node in nodes:
                node.stop()
            front.stop()

    local_p50, node_p50 = percentile(local_latency, 0.5), percentile(node_latency, 0.5)
    local_p90, node_p90 = percentile(local_latency, 0.9), percentile(node_latency, 0.9)
    print(f"one-sentence embedding ({EMBEDDER}), {args.requests} sequential requests:")
    print(f"  local worker     p50 {local_p50 * 1000:7.2f} ms   p90 {local_p90 * 1000:7.2f} ms")
    print(f"  through a node   p50 {node_p50 * 1000:7.2f} ms   p90 {node_p90 * 1000:7.2f} ms")
    print(
        f"  added            p50 {(node_p50 - local_p50) * 1000:7.2f} ms   p90 {(node_p90 - local_p90) * 1000:7.2f} ms"
    )
    local_median, cluster_median = statistics.median(local_jobs), statistics.median(cluster_jobs)
    print(f"meeting job (~14 s of audio), median of {args.jobs}:")
    print(f"  local executor   {local_median:6.2f} s   {' '.join(f'{t:.2f}' for t in local_jobs)}")
    print(f"  Celery, 2 nodes  {cluster_median:6.2f} s   {' '.join(f'{t:.2f}' for t in cluster_jobs)}")
    print(f"  ratio            {cluster_median / local_median:6.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
