"""The cluster router without a cluster: a lost broker is a clear 503 (for a request, and a transient error for a
job step), and routing prefers a live node's model queue over its device-class queue (real Redis)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any, cast

import pytest

from modelhost.catalog.builtin import BUILTIN_MODELS
from modelhost.catalog.schemas import ModelEntry
from modelhost.cluster.registry import NodeRegistry
from modelhost.cluster.router import (
    BrokerUnavailable,
    ClusterRouter,
    decode_files,
    encode_files,
    pack_message,
    unpack_message,
)
from modelhost.config import Settings
from modelhost.coordinator.coordinator import Coordinator
from modelhost.errors import ModelUnavailable
from modelhost.jobs.executor import TRANSIENT_ERRORS
from tests.support.cluster import free_port, redis_url_or_skip


def entry(model_id: str) -> ModelEntry:
    spec = next(m for m in BUILTIN_MODELS if m.id == model_id)
    return cast(ModelEntry, spec)  # only .id and .device are read here


def router(broker_url: str, tmp_path: Path) -> ClusterRouter:
    settings = Settings(data_dir=tmp_path, broker_url=broker_url, local_workers=False)
    return ClusterRouter(cast(Coordinator, object()), settings)


def test_a_lost_broker_is_a_503_and_a_transient_step_error(tmp_path: Path) -> None:
    lost = router(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    with pytest.raises(BrokerUnavailable) as caught:
        asyncio.run(lost.infer(entry("all-minilm-l6-v2-onnx"), {"input": ["x"]}))
    assert caught.value.status_code == 503
    assert caught.value.code == "broker_unavailable"
    assert "Redis" in caught.value.message
    assert isinstance(caught.value, TRANSIENT_ERRORS)


def test_routing_prefers_a_model_queue_then_the_device_class(tmp_path: Path) -> None:
    url = redis_url_or_skip()
    registry = NodeRegistry(url, heartbeat_seconds=1)
    routed = router(url, tmp_path)
    try:
        with pytest.raises(ModelUnavailable, match="no node serves model 'whisper-tiny.en'"):
            routed.target_queue(entry("whisper-tiny.en"))
        registry.beat({"name": "n1", "queues": ["jobs", "cpu"], "workers": []})
        registry.beat({"name": "n2", "queues": ["model.whisper-tiny.en"], "workers": []})
        routed.registry._cache = (0.0, [])  # drop the 1 s cache
        assert routed.target_queue(entry("whisper-tiny.en")) == "model.whisper-tiny.en"
        assert routed.target_queue(entry("all-minilm-l6-v2-onnx")) == "cpu"
        names = [n["name"] for n in registry.nodes()]
        assert names == ["n1", "n2"]
        assert registry.nodes()[0]["queue_depth"] == {"jobs": 0, "cpu": 0}
    finally:
        registry.redis.flushdb()
        registry.close()
        routed.registry.close()


def test_request_files_survive_the_task_encoding(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF\x00\x01")
    upload = io.BytesIO(b"upload bytes")
    upload.read()  # an upload handed over after the route looked at it: read from its start
    files: dict[str, Any] = {"file": b"\x00\xff", "reference": path, "sample": upload}
    assert decode_files(encode_files(files)) == {
        "file": b"\x00\xff",
        "reference": b"RIFF\x00\x01",
        "sample": b"upload bytes",
    }
    assert decode_files(encode_files(None)) is None


def test_request_files_travel_by_key_through_a_blob_store(tmp_path: Path) -> None:
    from modelhost.storage.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path / "blobs")
    upload = io.BytesIO(b"upload bytes")
    encoded = encode_files({"file": upload, "raw": b"\x00\xff"}, blobs, "requests/abc/")
    assert encoded == {"file": {"blob": "requests/abc/file"}, "raw": {"blob": "requests/abc/raw"}}
    assert len(json.dumps(encoded)) < 100  # keys, not the bytes
    assert decode_files(encoded, blobs) == {"file": b"upload bytes", "raw": b"\x00\xff"}
    # broker_inline_file_bytes: files up to that size travel in the task itself, larger ones by key
    path = tmp_path / "large.bin"
    path.write_bytes(b"\x01" * 13)
    upload.read()  # handed over after the route looked at it: its size counts from its start
    encoded = encode_files({"file": upload, "raw": b"\x00\xff", "large": path}, blobs, "requests/def/", 12)
    assert encoded["large"] == {"blob": "requests/def/large"}
    assert "data" in encoded["file"]
    assert "data" in encoded["raw"]
    assert decode_files(encoded, blobs) == {"file": b"upload bytes", "raw": b"\x00\xff", "large": b"\x01" * 13}
    assert not blobs.exists("requests/def/file")
    with pytest.raises(ValueError, match="not a request file"):  # a task cannot make a node read any other blob
        decode_files({"file": {"blob": "jobs/x/artifacts/video.mp4"}}, blobs)


def test_binary_results_survive_the_reply_encoding() -> None:
    reply = {"result": {"audio": b"\x00RIFF\xff", "embeddings": [b"\x01\x02"], "text": "hi", "n": 3}}
    assert unpack_message(json.loads(json.dumps(pack_message(reply)))) == reply
