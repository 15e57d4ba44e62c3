"""The S3 blob store against moto in server mode — an S3 EMULATOR (no real S3 server installs on this machine);
the same code talks to MinIO or AWS through ``MODELHOST_STORAGE__ENDPOINT_URL`` and the standard AWS variables."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.config import Settings
from modelhost.storage import s3
from modelhost.storage.blobs import build_blob_store
from modelhost.storage.s3 import S3BlobStore, StorageUnavailable
from tests.support.cluster import aws_env, free_port, moto_s3


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in aws_env().items():
            mp.setenv(key, value)
        with moto_s3(tmp_path_factory.mktemp("moto")) as url:
            yield url


@pytest.fixture
def store(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3BlobStore:
    monkeypatch.setenv("MODELHOST_STORAGE__URL", "s3://modelhost-test/some/prefix")
    monkeypatch.setenv("MODELHOST_STORAGE__ENDPOINT_URL", endpoint)
    settings = Settings(data_dir=tmp_path)
    built = build_blob_store(settings.data_dir, settings.storage)
    assert isinstance(built, S3BlobStore)
    built.ensure_bucket()
    return built


def test_put_get_from_bytes_path_and_stream(store: S3BlobStore, tmp_path: Path) -> None:
    data = b"x" * 3_000_000 + b"end"
    info = store.put("jobs/a/inputs/file", data)
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.get("jobs/a/inputs/file") == data
    source = tmp_path / "f.bin"
    source.write_bytes(b"from a path")
    store.put("jobs/a/work/p", source)
    store.put("jobs/a/work/s", io.BytesIO(b"from a stream"))
    assert store.get("jobs/a/work/p") == b"from a path"
    assert store.size("jobs/a/work/s") == len(b"from a stream")
    with store.open("jobs/a/work/s") as stream:
        stream.seek(5)
        assert stream.read() == b"a stream"
    # the key lives under the prefix in the bucket
    listed = store.client.list_objects_v2(Bucket="modelhost-test", Prefix="some/prefix/jobs/a/")
    assert {o["Key"] for o in listed["Contents"]} == {
        "some/prefix/jobs/a/inputs/file",
        "some/prefix/jobs/a/work/p",
        "some/prefix/jobs/a/work/s",
    }


def test_missing_keys_and_folder_delete(store: S3BlobStore) -> None:
    with pytest.raises(KeyError):
        store.get("jobs/none/x")
    with pytest.raises(KeyError):
        store.size("jobs/none/x")
    assert not store.exists("jobs/none/x")
    store.put("jobs/b/work/1", b"1")
    store.put("jobs/b/artifacts/t.srt", b"2")
    store.put("jobs/bb/keep", b"3")
    store.delete("jobs/b")
    assert not store.exists("jobs/b/work/1")
    assert not store.exists("jobs/b/artifacts/t.srt")
    assert store.exists("jobs/bb/keep")  # a sibling with the same name prefix stays
    store.delete("jobs/none")  # missing is fine
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put("../escape", b"")


def test_local_path_and_presigned_url(store: S3BlobStore) -> None:
    import httpx

    store.put("jobs/c/inputs/audio.wav", b"RIFF....")

    async def read() -> tuple[bytes, Path]:
        async with store.local_path("jobs/c/inputs/audio.wav") as path:
            assert path.suffix == ".wav"
            return path.read_bytes(), path

    data, path = asyncio.run(read())
    assert data == b"RIFF...."
    assert not path.exists()
    assert httpx.get(store.url("jobs/c/inputs/audio.wav")).content == b"RIFF...."


@pytest.mark.parametrize("single_get_bytes", [s3.SINGLE_GET_BYTES, 1000], ids=["one-get", "ranged-transfer"])
def test_open_and_local_path_read_whole_objects(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch, single_get_bytes: int
) -> None:
    """Small objects come in one streamed GET, those above ``SINGLE_GET_BYTES`` through boto3's ranged transfer;
    both give every byte, and a missing key is a ``KeyError`` either way."""
    monkeypatch.setattr(s3, "SINGLE_GET_BYTES", single_get_bytes)
    data = bytes(range(256)) * 9_000  # 2.3 MB: above one read chunk, above the lowered threshold
    store.put("jobs/d/work/audio.pcm", data)
    with store.open("jobs/d/work/audio.pcm") as stream:
        assert stream.read() == data
        stream.seek(1_000_000)
        assert stream.read(4) == data[1_000_000:1_000_004]

    async def read(key: str) -> bytes:
        async with store.local_path(key) as path:
            return path.read_bytes()

    assert asyncio.run(read("jobs/d/work/audio.pcm")) == data
    with pytest.raises(KeyError):
        store.open("jobs/d/work/none")
    with pytest.raises(KeyError):
        asyncio.run(read("jobs/d/work/none"))


def test_unreachable_storage_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in aws_env().items():
        monkeypatch.setenv(key, value)
    settings = Settings(data_dir=tmp_path, storage={"url": "s3://b", "endpoint_url": f"http://127.0.0.1:{free_port()}"})
    store = build_blob_store(settings.data_dir, settings.storage)
    with pytest.raises(StorageUnavailable) as caught:
        store.put("k", b"v")
    assert caught.value.status_code == 503


def test_storage_url_is_checked() -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings(storage={"url": "minio://x"})
