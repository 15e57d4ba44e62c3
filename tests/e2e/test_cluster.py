"""A cluster on this machine: real Redis (a dedicated db) and PostgreSQL (a fresh database per run), S3 through moto
in server mode — an S3 EMULATOR, since no real S3 server installs here — a front with ``--no-local-workers`` and two
``modelhost node`` processes with their own data dirs and different models. Speaker search uses each process's
embedded Qdrant (no Qdrant server runs here; no speaker is enrolled in these tests, so every process answers "no
match", as one machine does). The commands are the ones deploy/ runs.

Qdrant: no Qdrant server installs here — none is packaged on PyPI (``qdrant-client`` is a client with an embedded
local mode; ``qdrant-edge-py`` is an in-process engine), Debian or npm (clients only), and Docker images and GitHub
release binaries cannot be fetched — so ``MODELHOST_QDRANT__URL`` is not tested against a server.

Checks: a meeting job (in two chunks: its chunk calls run as chord items) completes with the same result as on one
machine (local executor, SQLite, local blobs); a presentation job too, its per-slide narration a Celery chord whose
items both nodes run (their logs say which); ``kill -9`` of the node running a step (and its workers) → the step is
redelivered and the job completes with the same result; Redis restarted, or wiped with FLUSHALL, mid-job → the job
completes (the front's reconciler queues what Redis lost) without restarting the front; synchronous embeddings, errors,
a transcription whose upload travels through S3 (deleted after the call) and a streamed chat completion through a node.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import (
    FRONT_COMMAND,
    NodeProcess,
    PrivateRedis,
    aws_env,
    fresh_postgres,
    moto_s3,
    redis_url_or_skip,
)
from tests.support.diarization import conversation
from tests.support.server import ServerProcess

TURNS = [
    ("slt", "Good morning, thanks for joining the planning call today."),
    ("rms", "Happy to be here. Shall we start with the budget?"),
    ("slt", "Yes. The new office will cost more than we expected."),
    ("rms", "Then we should ask for three quotes before we decide."),
]
WHISPER = "whisper-tiny.en"
GEMMA = "gemma-3-270m"
# Node a also consumes the queues of gemma and hibari (TTS) without preloading them (workers start on first use).
NODE_A = ["--queues", f"jobs,model.{GEMMA},model.hibari", "--preload", WHISPER, "--concurrency", "4"]
NODE_B = ["--queues", "jobs", "--preload", "diarizer,resemblyzer,all-minilm-l6-v2-onnx", "--concurrency", "4"]
VISIBILITY_SECONDS = 8
# The ~14 s recording in chunks of at most 10 s (the least allowed): two chunks, so the meeting job fans out — chunk 2
# of the transcription and both chunks of the diarization are chord items. Nodes read runtime settings when they
# start, so the front stores it before they do; the one-machine reference uses it too.
CHUNK_SECONDS = 10


@dataclass
class Cluster:
    front: ServerProcess
    nodes: dict[str, NodeProcess]
    env: dict[str, str]
    broker_url: str
    root: Path
    private_redis: PrivateRedis | None
    endpoint: str
    bucket: str

    def node(self, name: str, args: list[str]) -> NodeProcess:
        node = NodeProcess(name, self.root / f"node-{name}", self.env, args).start(self.broker_url)
        self.nodes[name] = node
        return node


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _turns = conversation(TURNS, 0.5, tmp_path_factory.mktemp("talk"), "meeting")
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import boto3

    root = tmp_path_factory.mktemp("cluster")
    # A redis-server of our own when it is installed (the Redis-restart test restarts it); else the machine's Redis,
    # in a dedicated database number.
    private_redis = PrivateRedis.start_or_none(root / "redis")
    broker_url = private_redis.url if private_redis else redis_url_or_skip()
    with fresh_postgres() as database_url, moto_s3(root) as endpoint:
        bucket = f"modelhost-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=bucket)
        env = {
            **aws_env(),
            "MODELHOST_BROKER_URL": broker_url,
            "MODELHOST_DATABASE_URL": database_url,
            "MODELHOST_STORAGE__URL": f"s3://{bucket}/cluster",
            "MODELHOST_STORAGE__ENDPOINT_URL": endpoint,
            "MODELHOST_BROKER_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS),
            "MODELHOST_NODE_HEARTBEAT_SECONDS": "1",
            "MODELHOST_BROKER_RECONCILE_SECONDS": "5",
        }
        # The front sends every request file through S3 (a test below checks that path); the nodes keep the default,
        # so the jobs' inference calls between them carry small files inside the task.
        front_env = {**env, "MODELHOST_BROKER_INLINE_FILE_BYTES": "0"}
        front = ServerProcess(root / "front", front_env, args=FRONT_COMMAND[2:]).start()
        set_chunk_seconds(front)
        running = Cluster(front, {}, env, broker_url, root, private_redis, endpoint, bucket)
        try:
            running.node("a", NODE_A)
            running.node("b", NODE_B)
            yield running
        finally:
            for node in running.nodes.values():
                node.stop()
            front.stop()
            if private_redis is not None:
                private_redis.stop()


def set_chunk_seconds(server: ServerProcess) -> None:
    with server.client() as client:
        response = client.patch("/v1/settings", json={"meeting_chunk_seconds": CHUNK_SECONDS})
    assert response.status_code == 200, response.text


def _boto_credentials() -> dict[str, str]:
    env = aws_env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def submit(server: ServerProcess, recording: Path) -> str:
    with server.client() as client, recording.open("rb") as audio:
        resp = client.post(
            "/v1/jobs/meeting-transcription",
            files={"file": (recording.name, audio, "audio/flac")},
            data={"model": WHISPER, "num_speakers": "2"},
        )
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["id"]
    return job_id


def wait_done(server: ServerProcess, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while time.monotonic() < deadline:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


def transcript(server: ServerProcess, job_id: str) -> str:
    with server.client() as client:
        resp = client.get(f"/v1/jobs/{job_id}/artifacts/transcript.json")
    assert resp.status_code == 200, resp.text
    return resp.text


@pytest.fixture(scope="module")
def deck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.decks import build_deck

    return build_deck(tmp_path_factory.mktemp("deck") / "deck.pptx")


def submit_deck(server: ServerProcess, deck: Path) -> str:
    with server.client() as client:
        resp = client.post(
            "/v1/jobs/presentation-video",
            files={"file": (deck.name, deck.read_bytes(), PPTX)},
            data={"silence_seconds": "0.8", "width": "640"},
        )
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["id"]
    return job_id


PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"


@pytest.fixture(scope="module")
def single_machine(tmp_path_factory: pytest.TempPathFactory, recording: Path, deck: Path) -> dict[str, Any]:
    """The same jobs on one machine: `modelhost serve` with no broker (local executor, SQLite, local blobs)."""
    server = ServerProcess(tmp_path_factory.mktemp("single")).start()
    try:
        set_chunk_seconds(server)
        meeting = wait_done(server, submit(server, recording))
        assert meeting["status"] == "completed", meeting
        presentation = wait_done(server, submit_deck(server, deck))
        assert presentation["status"] == "completed", presentation
        with server.client() as client:
            notes = client.get(f"/v1/jobs/{presentation['id']}/artifacts/notes.json").content
        return {
            "meeting": (meeting, transcript(server, meeting["id"])),
            "presentation": (presentation, notes),
        }
    finally:
        server.stop()


@pytest.fixture(scope="module")
def one_machine(single_machine: dict[str, Any]) -> tuple[dict[str, Any], str]:
    result: tuple[dict[str, Any], str] = single_machine["meeting"]
    return result


def test_health_and_cluster_status_list_the_nodes(cluster: Cluster) -> None:
    health = cluster.front.health()
    assert health["workers"] == []  # the front runs no model
    assert health["ml_modules_loaded"] == []
    nodes = {n["name"]: n for n in health["nodes"]}
    assert set(nodes) >= {"a", "b"}
    assert f"model.{WHISPER}" in nodes["a"]["queues"]
    assert WHISPER in {w["model"] for w in nodes["a"]["workers"]}  # preloaded
    assert {"diarizer", "resemblyzer"} <= set(nodes["b"]["models"])
    assert "jobs" in nodes["b"]["queue_depth"]
    # the CLI reads the same records straight from Redis
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env["MODELHOST_BROKER_URL"] = cluster.broker_url
    out = subprocess.run(
        [sys.executable, "-m", "modelhost", "--json", "cluster", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert {n["name"] for n in json.loads(out)} >= {"a", "b"}


def test_embeddings_through_a_node(cluster: Cluster) -> None:
    with cluster.front.client() as client:
        resp = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2-onnx", "input": "One sentence."})
        assert resp.status_code == 200, resp.text
        vector = resp.json()["data"][0]["embedding"]
        assert len(vector) == 384
        assert abs(sum(v * v for v in vector) - 1.0) < 1e-3
        # a model no node serves: a clear 503, not a hang
        missing = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"})
        assert missing.status_code == 503
        assert missing.json()["error"]["code"] == "no_node"
        # a node's own error comes back with its status
        bad = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2-onnx", "input": ""})
        assert bad.status_code == 400, bad.text


def test_transcription_through_a_node_sends_the_upload_through_s3(cluster: Cluster, recording: Path) -> None:
    import boto3

    with cluster.front.client(timeout=180) as client, recording.open("rb") as audio:
        resp = client.post(
            "/v1/audio/transcriptions",
            files={"file": (recording.name, audio, "audio/flac")},
            data={"model": WHISPER, "response_format": "json"},
        )
    assert resp.status_code == 200, resp.text
    assert "budget" in resp.json()["text"].lower()
    # The upload went to the bucket under requests/<id>/ (the node read it there), and is gone after the call.
    moto_log = (cluster.root / "moto.log").read_text(errors="replace")
    assert re.search(rf"PUT /{cluster.bucket}/cluster/requests/[0-9a-f]{{32}}/file ", moto_log), moto_log[-2000:]
    assert re.search(rf"GET /{cluster.bucket}/cluster/requests/[0-9a-f]{{32}}/file ", moto_log)
    s3 = boto3.client("s3", endpoint_url=cluster.endpoint, **_boto_credentials())
    deadline = time.monotonic() + 10  # deleted in the background, after the answer
    while (left := s3.list_objects_v2(Bucket=cluster.bucket, Prefix="cluster/requests/")).get("KeyCount", 0):
        assert time.monotonic() < deadline, left.get("Contents")
        time.sleep(0.1)


def test_streamed_chat_through_a_node_equals_the_whole_answer(cluster: Cluster) -> None:
    body: dict[str, Any] = {
        "model": GEMMA,
        "messages": [{"role": "user", "content": "Name a large animal that lives in the sea."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    with cluster.front.client(timeout=180) as client:
        whole = client.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        content = whole.json()["choices"][0]["message"]["content"]
        assert content.strip()
        parts: list[str] = []
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    parts.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    assert len([p for p in parts if p]) > 3  # really streamed, chunk by chunk
    assert "".join(parts) == content


def test_meeting_job_matches_one_machine(
    cluster: Cluster, recording: Path, one_machine: tuple[dict[str, Any], str]
) -> None:
    reference, reference_transcript = one_machine
    assert "budget" in reference_transcript.lower()  # a real transcript, with words, is what is compared
    job = wait_done(cluster.front, submit(cluster.front, recording))
    assert job["status"] == "completed", job
    assert job["result"] == reference["result"]
    assert transcript(cluster.front, job["id"]) == reference_transcript
    # the artifacts live in the (emulated) S3 bucket, not on the front's disk
    assert not (cluster.front.data_dir / "blobs").exists()
    # Chunks ran as chord items: chunk 2 of the transcription (chunk 1 ran in the step's task: its language holds for
    # the rest) and both chunks of the diarization, each once. (Three items need not spread over both nodes: a node
    # may take them all; the presentation test, with one item per slide, checks the spread.)
    ran = {step: items_run(cluster, job["id"], "meeting-transcription", step) for step in ("transcribe", "diarize")}
    assert sorted(i for items in ran["transcribe"].values() for i in items) == [0], ran
    assert sorted(i for items in ran["diarize"].values() for i in items) == [0, 1], ran


def test_presentation_job_matches_one_machine(cluster: Cluster, deck: Path, single_machine: dict[str, Any]) -> None:
    reference, reference_notes = single_machine["presentation"]
    job = wait_done(cluster.front, submit_deck(cluster.front, deck))
    assert job["status"] == "completed", job
    assert job["result"] == reference["result"]
    assert {a["name"] for a in job["artifacts"]} == {a["name"] for a in reference["artifacts"]}
    with cluster.front.client() as client:
        assert client.get(f"/v1/jobs/{job['id']}/artifacts/notes.json").content == reference_notes
        video = client.get(f"/v1/jobs/{job['id']}/artifacts/video.mp4")
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"
    # The per-slide narration ran as a chord: one task per slide, spread over both nodes (each logs what it ran).
    slides = len(json.loads(reference_notes)["slides"])
    ran = items_run(cluster, job["id"])
    assert sorted(i for items in ran.values() for i in items) == list(range(slides)), ran  # each once
    assert ran["a"], ran  # both nodes ran items
    assert ran["b"], ran


def items_run(
    cluster: Cluster, job_id: str, kind: str = "presentation-video", step: str = "synthesizing_audio"
) -> dict[str, list[int]]:
    """Which chord items of the job's step (its first gather; by default the narration) each node ran and recorded,
    from the nodes' logs."""
    pattern = re.compile(rf"job {job_id} \({kind}\) step {step}/~fan-0/(\d+) item \d+ done")
    return {name: [int(i) for i in pattern.findall(node.log(whole=True))] for name, node in cluster.nodes.items()}


def test_redis_restarted_mid_job_the_job_completes(
    cluster: Cluster, recording: Path, one_machine: tuple[dict[str, Any], str]
) -> None:
    if cluster.private_redis is None:
        pytest.skip("redis-server is not installed: the machine's shared Redis is not restarted by tests")
    reference, _ = one_machine
    job_id = submit(cluster.front, recording)
    marker = f"job {job_id} (meeting-transcription) step transcribe starting"
    deadline = time.monotonic() + 120
    while not any(marker in node.log() for node in cluster.nodes.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.private_redis.restart(down_seconds=2)  # append-only file: queued and unacknowledged tasks survive
    job = wait_done(cluster.front, job_id)
    assert job["status"] == "completed", job
    assert job["result"] == reference["result"]
    assert all(node.process is not None and node.process.poll() is None for node in cluster.nodes.values())


def test_kill_9_of_the_node_running_a_step_redelivers_it(
    cluster: Cluster, recording: Path, one_machine: tuple[dict[str, Any], str]
) -> None:
    reference, _ = one_machine
    job_id = submit(cluster.front, recording)
    marker = f"job {job_id} (meeting-transcription) step transcribe starting"
    victim: str | None = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        victim = next((name for name, node in cluster.nodes.items() if marker in node.log()), None)
        time.sleep(0.05)
    assert victim is not None, "no node started the transcribe step"
    args = cluster.nodes[victim].args
    cluster.nodes[victim].kill()  # the node and its worker processes, mid-step
    with httpx.Client(base_url=cluster.front.url, timeout=10) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    restarted = cluster.node(f"{victim}2", args)  # what systemd's Restart= does
    job = wait_done(cluster.front, job_id)
    assert job["status"] == "completed", job
    assert job["result"] == reference["result"]
    started_again = sum(marker in node.log() for name, node in cluster.nodes.items() if name != victim)
    assert started_again >= 1, "the step did not run again on a surviving or restarted node"
    assert restarted.process is not None
    assert restarted.process.poll() is None


def test_redis_wiped_mid_job_the_front_requeues_what_it_lost(
    cluster: Cluster, deck: Path, single_machine: dict[str, Any]
) -> None:
    """FLUSHALL (or a Redis restarted without persistence), the front never restarted:

    1. while the narration chord is in flight: once its first item (a silent slide: milliseconds) is done and while
       the spoken ones may still run, both nodes are frozen (SIGSTOP) around the wipe; when the chord had counted that
       item (its ``.j`` set in Redis), the callback can never come and the front's reconciler must queue the step;
    2. a job whose first step is queued while both nodes are frozen: the wipe surely loses that task, and the
       reconciler queues it again.
    Both jobs complete with the one-machine result."""
    import redis

    reference, reference_notes = single_machine["presentation"]
    front_pid = cluster.front.process.pid if cluster.front.process else None
    nodes = [node for node in cluster.nodes.values() if node.process is not None and node.process.poll() is None]
    client = redis.Redis.from_url(cluster.broker_url)

    def wipe() -> None:
        if cluster.private_redis is not None:
            client.flushall()  # our own redis-server: wipe everything, as a restart without persistence does
        else:
            client.flushdb()  # the machine's shared Redis: only the test database

    def freeze(frozen: bool) -> None:
        for node in nodes:
            node.freeze(frozen)

    mid_job = submit_deck(cluster.front, deck)
    deadline = time.monotonic() + 180
    while not any(items_run(cluster, mid_job).values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    freeze(True)
    try:
        done_before = sum(len(items) for items in items_run(cluster, mid_job).values())
        slides = len(json.loads(reference_notes)["slides"])
        assert 0 < done_before < slides, f"{done_before} of {slides} narration items done before the wipe"
        counted = bool(client.keys("celery-taskset-meta-*.j"))
        wipe()
    finally:
        freeze(False)

    freeze(True)
    try:
        queued = submit_deck(cluster.front, deck)
        deadline = time.monotonic() + 10
        while queued.encode() not in b"".join(client.lrange("jobs", 0, -1)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queued.encode() in b"".join(client.lrange("jobs", 0, -1)), "the job's first step was not queued"
        wipe()
    finally:
        freeze(False)
    client.close()

    for job_id in (mid_job, queued):
        job = wait_done(cluster.front, job_id)
        assert job["status"] == "completed", job
        assert job["result"] == reference["result"]
        with cluster.front.client() as http:
            assert http.get(f"/v1/jobs/{job_id}/artifacts/notes.json").content == reference_notes
    assert cluster.front.process is not None
    assert cluster.front.process.pid == front_pid
    assert cluster.front.process.poll() is None
    front_log = cluster.front.log_path.read_text(errors="replace")
    assert "Redis lost its data" in front_log
    assert f"job {queued} has no task in Redis and no lease" in front_log, front_log[-3000:]
    if counted:
        assert f"job {mid_job} has no task in Redis and no lease" in front_log, front_log[-3000:]
