"""The S3 blob store against moto in server mode — an S3 EMULATOR (no real S3 server installs on this machine);
the same code talks to MinIO or AWS through ``MODELHOST_STORAGE__ENDPOINT_URL`` and the standard AWS variables."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelhost.config import Settings
from modelhost.errors import StorageFull
from modelhost.storage import s3
from modelhost.storage.blobs import build_blob_store
from modelhost.storage.s3 import S3BlobStore, StorageUnavailable
from tests.support import disks
from tests.support.blobs import DATA, check_read_range
from tests.support.cluster import aws_env, free_port


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


def _ranged_gets(store: S3BlobStore) -> list[tuple[str | None, int]]:
    """The GETs ``store`` sends from now on, each as (its ``Range`` header, the length of the server's answer)."""
    sent: list[str | None] = []
    gets: list[tuple[str | None, int]] = []

    def before(request: Any, **_: Any) -> None:
        sent.append(request.headers.get("Range"))

    def after(parsed: dict[str, Any], **_: Any) -> None:
        range_header = sent.pop()
        gets.append((None if range_header is None else range_header.decode(), int(parsed["ContentLength"])))

    store.client.meta.events.register("before-send.s3.GetObject", before)
    store.client.meta.events.register("after-call.s3.GetObject", after)
    return gets


def test_read_range(store: S3BlobStore) -> None:
    check_read_range(store, "jobs/r/work/audio.pcm")


def test_read_range_fetches_only_the_range(store: S3BlobStore) -> None:
    """One GET per read, asking for the range alone; the server answers that many bytes (and, for a range that
    runs past the end, what is there), where ``open`` fetches the whole object."""
    store.put("jobs/r2/work/audio.pcm", DATA)
    gets = _ranged_gets(store)
    assert store.read_range("jobs/r2/work/audio.pcm", 1_000_000, 32_000) == DATA[1_000_000:1_032_000]
    assert store.read_range("jobs/r2/work/audio.pcm", len(DATA) - 10, 100) == DATA[-10:]
    assert gets == [
        ("bytes=1000000-1031999", 32_000),
        (f"bytes={len(DATA) - 10}-{len(DATA) + 89}", 10),
    ]
    with store.open("jobs/r2/work/audio.pcm") as stream:
        stream.seek(1_000_000)
        stream.read(32_000)
    assert gets[2] == (None, len(DATA))


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


def _cached_store(endpoint: str, data_dir: Path, redis_url: str, cache_mb: int = 256) -> tuple[S3BlobStore, list[str]]:
    """A cluster process's S3 store (caching, version register in Redis) and the GETs it sends to S3."""
    settings = Settings(
        data_dir=data_dir,
        broker_url=redis_url,
        storage={"url": "s3://modelhost-test/cached", "endpoint_url": endpoint, "cache_mb": cache_mb},
    )
    built = build_blob_store(settings.data_dir, settings.storage, settings.broker_url)
    assert isinstance(built, S3BlobStore)
    built.ensure_bucket()
    gets: list[str] = []
    built.client.meta.events.register("before-send.s3.GetObject", lambda request, **_: gets.append(request.url))
    return built, gets


def test_a_cached_copy_is_served_only_while_it_is_current(endpoint: str, tmp_path: Path) -> None:
    """Two processes of a cluster (``a`` and ``b``): what one put or got is read again from its copy without a GET,
    until a put or delete by either makes it stale; the version register lost (Redis wiped) means GETs again."""
    import redis

    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    a, a_gets = _cached_store(endpoint, tmp_path / "a", redis_url)
    b, b_gets = _cached_store(endpoint, tmp_path / "b", redis_url)
    assert a.cache is not None
    assert b.cache is not None
    a.put("jobs/e/work/audio.pcm", b"one" * 1000)
    assert a.get("jobs/e/work/audio.pcm") == b"one" * 1000  # its own put: no GET
    with a.open("jobs/e/work/audio.pcm") as stream:
        assert stream.read() == b"one" * 1000
    assert a_gets == []
    assert b.get("jobs/e/work/audio.pcm") == b"one" * 1000  # b has no copy: a GET, and b keeps it
    assert b.get("jobs/e/work/audio.pcm") == b"one" * 1000
    assert len(b_gets) == 1

    b.put("jobs/e/work/audio.pcm", b"two")  # e.g. the step redelivered to b after a seemed dead
    assert a.get("jobs/e/work/audio.pcm") == b"two"  # a's copy is stale: a GET
    assert len(a_gets) == 1
    assert a.get("jobs/e/work/audio.pcm") == b"two"
    assert len(a_gets) == 1  # and now a holds the current copy

    redis.Redis.from_url(redis_url).flushdb()  # the register is gone: nothing is known to be current
    assert a.get("jobs/e/work/audio.pcm") == b"two"
    assert len(a_gets) == 2

    a.put("jobs/e/artifacts/t.srt", b"srt")
    assert b.get("jobs/e/artifacts/t.srt") == b"srt"
    b.delete("jobs/e")  # a folder: a's copies go stale with it
    with pytest.raises(KeyError):
        a.get("jobs/e/artifacts/t.srt")
    with pytest.raises(KeyError):
        b.get("jobs/e/work/audio.pcm")
    a.cache.close()
    b.cache.close()
    assert not a.cache.root.exists()


def test_the_cache_keeps_small_copies_and_clears_a_dead_process_folder(endpoint: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / "tmp" / f"blobcache-{int(dead.stdout)}-abc"  # a process killed with kill -9 left it
    leftover.mkdir(parents=True)
    store, gets = _cached_store(endpoint, tmp_path, redis_url, cache_mb=1)  # copies of at most 256 KiB
    assert store.cache is not None
    assert not leftover.exists()
    store.put("jobs/f/big", b"x" * 300_000)
    store.put("jobs/f/small", b"y" * 1000)
    assert store.get("jobs/f/big") == b"x" * 300_000
    assert store.get("jobs/f/small") == b"y" * 1000
    assert len(gets) == 1  # only the big one came from S3
    off, off_gets = _cached_store(endpoint, tmp_path / "off", redis_url, cache_mb=0)
    assert off.cache is None
    off.put("jobs/f/other", b"z")
    assert off.get("jobs/f/other") == b"z"
    assert len(off_gets) == 1
    store.cache.close()


def test_read_range_uses_a_current_cached_copy_only(endpoint: str, tmp_path: Path) -> None:
    """A range of a blob this process put (or got whole) comes from its copy without a GET. A process without a copy
    sends a ranged GET, which tells it the blob's size: a blob small enough to keep a copy of is fetched whole at
    the next read (and kept), the reads after come from the copy; a bigger one is only ever read in ranges. Once
    another process put the blob again, the stale copy is not read."""
    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    a, _ = _cached_store(endpoint, tmp_path / "a", redis_url)
    b, _ = _cached_store(endpoint, tmp_path / "b", redis_url)  # copies of up to 64 MiB
    small, _ = _cached_store(endpoint, tmp_path / "c", redis_url, cache_mb=1)  # copies of up to 256 KiB
    assert a.cache is not None
    assert b.cache is not None
    assert small.cache is not None
    a_gets, b_gets, small_gets = _ranged_gets(a), _ranged_gets(b), _ranged_gets(small)
    a.put("jobs/g/work/audio.pcm", DATA)
    check = DATA[2_000_000:2_000_100]
    assert a.read_range("jobs/g/work/audio.pcm", 2_000_000, 100) == check
    assert a.read_range("jobs/g/work/audio.pcm", len(DATA) - 3, 10) == DATA[-3:]  # short at the end, from the copy
    assert a.read_range("jobs/g/work/audio.pcm", len(DATA) + 3, 10) == b""
    assert a_gets == []

    for _ in range(3):
        assert b.read_range("jobs/g/work/audio.pcm", 2_000_000, 100) == check
    assert b.read_range("jobs/g/work/audio.pcm", len(DATA) - 3, 10) == DATA[-3:]
    assert b_gets == [("bytes=2000000-2000099", 100), (None, len(DATA))]  # a range, then the whole blob, kept
    for _ in range(3):
        assert small.read_range("jobs/g/work/audio.pcm", 2_000_000, 100) == check
    assert small_gets == [("bytes=2000000-2000099", 100)] * 3  # too big to keep: never fetched whole

    b.put("jobs/g/work/audio.pcm", DATA[::-1])  # a's copy is stale now
    assert a.read_range("jobs/g/work/audio.pcm", 0, 4) == DATA[::-1][:4]
    assert a_gets == [("bytes=0-3", 4)]
    assert b.read_range("jobs/g/work/audio.pcm", 0, 4) == DATA[::-1][:4]  # b's own put: from its copy
    assert len(b_gets) == 2
    a.delete("jobs/g")
    with pytest.raises(KeyError):
        b.read_range("jobs/g/work/audio.pcm", 0, 4)
    for store in (a, b, small):
        assert store.cache is not None
        store.cache.close()


def test_a_delete_or_put_during_a_put_leaves_no_copy_current(tmp_path: Path) -> None:
    """The register entry of a put stays its pending mark until its upload returned; a delete (or another put) in
    between wins, so the first put's copy is never served."""
    from modelhost.storage.cache import BlobCache
    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    a = BlobCache(tmp_path / "a", redis_url, 1 << 20, "bucket")
    b = BlobCache(tmp_path / "b", redis_url, 1 << 20, "bucket")

    def upload(cache: BlobCache, name: str, token: str, etag: str) -> None:
        copy = cache.writer(3)
        assert copy is not None
        copy.write(b"abc")
        copy.keep(name, etag)
        cache.published(name, token, etag)

    a.forget(["k"], "token-a")  # a's put begins; its upload runs…
    b.forget(["k"])  # …while b deletes the key
    upload(a, "k", "token-a", '"etag-a"')
    assert a.current("k") is None  # the delete came last: a's copy is not current
    a.forget(["k"], "token-a2")
    b.forget(["k"], "token-b")  # a second put, by b, began after a's
    upload(a, "k", "token-a2", '"etag-a2"')
    upload(b, "k", "token-b", '"etag-b"')
    assert a.current("k") is None
    current = b.current("k")
    assert current is not None
    with current:
        assert current.read() == b"abc"
    a.close()
    b.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 1 MiB tmpfs of its own (a real full disk: writes past 1 MiB fail with ENOSPC)."""
    with disks.small_disk(tmp_path / "small-disk") as folder:
        yield folder


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_costs_the_cached_copy_never_the_put_or_read(endpoint: str, small_disk: Path) -> None:
    """The cache folder of node ``a`` lies on a 1 MiB disk: puts and reads of blobs that do not fit there succeed
    (from and to S3), leave no partial copy behind and are read from S3 again later; once the disk is full to the
    last byte, a small blob's copy fails when it is closed, with the same outcome; with room again, copies work."""
    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    data_dir = small_disk.parent / "a"
    data_dir.mkdir()
    (data_dir / "tmp").symlink_to(small_disk)  # the node's cache folder, <data_dir>/tmp, on the small disk
    a, a_gets = _cached_store(endpoint, data_dir, redis_url)
    b, b_gets = _cached_store(endpoint, small_disk.parent / "b", redis_url)
    assert a.cache is not None
    assert b.cache is not None
    a_ranges = _ranged_gets(a)  # the same GETs as a_gets, with their Range headers
    key = "jobs/h/work/audio.pcm"  # 2.3 MB, the cache would take it (up to 64 MiB) but the disk cannot

    info = a.put(key, DATA)
    assert (info.size, info.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert _files(a.cache.root) == []  # the partial copy is gone
    assert b.get(key) == DATA  # what S3 holds is whole
    assert a.get(key) == DATA
    assert len(a_gets) == 1  # no copy to serve: a GET
    assert _files(a.cache.root) == []  # and the read's copy failed the same way
    assert a.get(key) == DATA
    with a.open(key) as stream:
        assert stream.read() == DATA
    assert a.read_range(key, 1_000_000, 10) == DATA[1_000_000:1_000_010]
    assert len(a_gets) == 4
    assert a.read_range(key, 5, 10) == DATA[5:15]  # its size known: fetched whole to keep a copy, which fails
    assert a.read_range(key, 5, 10) == DATA[5:15]  # so ranges again, not the whole blob at every read
    assert [range_ for range_, _ in a_ranges[3:]] == ["bytes=1000000-1000009", None, "bytes=5-14"]
    assert _files(a.cache.root) == []

    a.put("jobs/h/work/small", b"s" * 5000)  # fits: copies work again
    assert a.get("jobs/h/work/small") == b"s" * 5000
    assert len(a_gets) == 6  # the two range reads above; "small" came from its copy
    assert len(_files(a.cache.root)) == 1

    disks.fill(small_disk)  # not one byte left: a 5000-byte copy fits its write buffer and fails when it is closed
    a.put("jobs/h/work/tiny", b"t" * 5000)
    b.put("jobs/h/work/tiny2", b"u" * 5000)
    assert a.get("jobs/h/work/tiny2") == b"u" * 5000
    assert a.get("jobs/h/work/tiny") == b"t" * 5000
    assert a.get("jobs/h/work/tiny") == b"t" * 5000
    assert len(a_gets) == 9  # tiny2 once, tiny twice: none of them was kept
    assert len(_files(a.cache.root)) == 1  # only the copy of "small"
    assert a.get("jobs/h/work/small") == b"s" * 5000  # still served from its copy
    assert len(a_gets) == 9
    a.cache.close()
    b.cache.close()


def test_a_copy_whose_buffered_writes_fail_is_discarded_whole(small_disk: Path) -> None:
    """A copy written in pieces smaller than the file's write buffer onto a full disk: the write that finds the
    disk full (when the buffer is flushed) discards the copy — the flush that closing the file tries again fails
    too — and the writes after it, and keeping it, do nothing; no file is left and nothing is served."""
    from modelhost.storage.cache import BlobCache
    from tests.support.cluster import redis_url_or_skip

    redis_url = redis_url_or_skip()
    cache = BlobCache(small_disk, redis_url, 1 << 30, "bucket")
    disks.fill(small_disk)
    copy = cache.writer(100_000)
    assert copy is not None
    for _ in range(100):
        copy.write(b"x" * 1000)
    cache.forget(["k"], "token")
    copy.keep("k", '"etag"')
    cache.published("k", "token", '"etag"')
    assert cache.current("k") is None
    assert _files(cache.root) == []
    cache.close()


def test_temporary_files_go_to_a_private_folder_of_the_data_dir(store: S3BlobStore, tmp_path: Path) -> None:
    """``local_path``'s copies (and the spools, which leave no name to see) are written under this process's folder
    in ``<data_dir>/tmp/s3`` (0700), not the system's temporary folder, and removed after use."""
    folder = store.temp_dir
    assert folder is not None
    assert folder.parent == tmp_path / "tmp" / "s3"
    assert folder.name.startswith(f"{os.getpid()}-")
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    store.put("jobs/t/inputs/audio.wav", DATA)

    async def read() -> Path:
        async with store.local_path("jobs/t/inputs/audio.wav") as path:
            assert path.read_bytes() == DATA
            return path

    assert asyncio.run(read()).parent == folder
    assert _files(folder) == []


def test_a_killed_process_temporary_files_are_removed_by_the_next_store(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``local_path`` copy left by a process killed with ``kill -9`` (its pid gone) is removed when the next store
    opens; a live process's folder, sharing the data dir, is kept. The store's own folder goes with it."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / "tmp" / "s3" / f"{int(gone.stdout)}-x1y2"
    dead.mkdir(parents=True)
    (dead / "modelhost-blob-abc.wav").write_bytes(DATA)
    with subprocess.Popen(["sleep", "60"]) as live_process:
        live = tmp_path / "tmp" / "s3" / f"{live_process.pid}-a9b8"
        live.mkdir()
        (live / "modelhost-blob-def.wav").write_bytes(DATA)
        monkeypatch.setenv("MODELHOST_STORAGE__URL", "s3://modelhost-test/stale")
        monkeypatch.setenv("MODELHOST_STORAGE__ENDPOINT_URL", endpoint)
        settings = Settings(data_dir=tmp_path)
        store = build_blob_store(settings.data_dir, settings.storage)
        assert isinstance(store, S3BlobStore)
        assert store.temp_dir is not None
        assert not dead.exists()
        assert (live / "modelhost-blob-def.wav").read_bytes() == DATA
        live_process.kill()
    folder = store.temp_dir
    del store
    assert not folder.exists()  # removed with its store


#: 10 MB: above ``open``'s 8 MiB in memory, more than the 1 MiB small disk holds.
BIG = bytes(range(256)) * 40_000


def _store_on_small_disk(endpoint: str, small_disk: Path) -> tuple[Settings, S3BlobStore]:
    """Settings whose ``<data_dir>/tmp`` is on the small disk, and their S3 store."""
    data_dir = small_disk.parent / "node"
    data_dir.mkdir()
    (data_dir / "tmp").symlink_to(small_disk)
    settings = Settings(data_dir=data_dir, storage={"url": "s3://modelhost-test/full", "endpoint_url": endpoint})
    store = build_blob_store(settings.data_dir, settings.storage)
    assert isinstance(store, S3BlobStore)
    store.ensure_bucket()
    return settings, store


def test_a_full_temporary_folder_is_storage_full_not_an_os_error(
    endpoint: str, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's temporary folder on a 1 MiB disk: a spool or copy that outgrows it raises ``StorageFull`` (507,
    naming the folder) and leaves no file behind; what fits still works."""
    _, store = _store_on_small_disk(endpoint, small_disk)
    assert store.temp_dir is not None
    store.put("jobs/f/work/big", BIG)  # spooled in memory (up to 64 MiB): no disk
    with pytest.raises(StorageFull) as caught:
        store.open("jobs/f/work/big")  # spooled to disk past 8 MiB
    assert caught.value.status_code == 507
    assert caught.value.code == "storage_full"
    assert str(store.temp_dir) in caught.value.message

    async def read(key: str) -> bytes:
        async with store.local_path(key) as path:
            return path.read_bytes()

    store.put("jobs/f/work/audio.pcm", DATA)
    with pytest.raises(StorageFull):
        asyncio.run(read("jobs/f/work/audio.pcm"))  # 2.3 MB copy
    monkeypatch.setattr(s3, "SINGLE_PUT_BYTES", 100_000)  # a put's spool goes to disk past this
    with pytest.raises(StorageFull):
        store.put("jobs/f/work/spooled", DATA)
    assert not store.exists("jobs/f/work/spooled")  # nothing was uploaded
    assert _files(store.temp_dir) == []  # no partial copy left

    store.put("jobs/f/work/small", b"s" * 50_000)  # fits: spooled and copied on the small disk
    assert asyncio.run(read("jobs/f/work/small")) == b"s" * 50_000
    assert store.get("jobs/f/work/big") == BIG  # get needs no temporary file


def test_a_full_temporary_folder_answers_507_through_the_app(endpoint: str, small_disk: Path) -> None:
    """An artifact download whose spool does not fit: the error envelope with 507 ``storage_full``, not a 500;
    a range of it reads no temporary file and is served."""
    from fastapi.testclient import TestClient

    from modelhost.api.app import create_app

    settings, _ = _store_on_small_disk(endpoint, small_disk)
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        services: Any = client.app.state.services  # type: ignore[attr-defined]
        job = services.jobs.store.create("meeting-transcription", {})
        key = f"jobs/{job.id}/artifacts/audio.ogg"
        info = services.jobs.deps.blobs.put(key, BIG)
        services.jobs.store.add_artifact(job.id, "audio.ogg", "audio/ogg", info.size, info.sha256, key)
        url = f"/v1/jobs/{job.id}/artifacts/audio.ogg"
        full = client.get(url)
        assert full.status_code == 507
        assert full.json()["error"]["code"] == "storage_full"
        assert full.json()["error"]["type"] == "service_unavailable"
        part = client.get(url, headers={"Range": "bytes=0-99"})
        assert (part.status_code, part.content) == (206, BIG[:100])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_artifact_range_downloads_read_only_the_range(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """``GET /v1/jobs/{id}/artifacts/{name}`` with a ``Range``: the bytes of the range (read in pieces of
    ``RANGE_PIECE``, lowered here so that a range takes several), fetched alone from S3; without one the whole
    artifact; a range outside it a 416, a missing blob a 404 either way."""
    from fastapi.testclient import TestClient

    from modelhost.api.app import create_app
    from modelhost.api.routes import jobs as job_routes

    if where == "s3":
        monkeypatch.setenv("MODELHOST_STORAGE__URL", "s3://modelhost-test/artifacts")
        monkeypatch.setenv("MODELHOST_STORAGE__ENDPOINT_URL", request.getfixturevalue("endpoint"))
    monkeypatch.setattr(job_routes, "RANGE_PIECE", 100_000)
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        services: Any = client.app.state.services  # type: ignore[attr-defined]
        blobs = services.jobs.deps.blobs
        if where == "s3":
            blobs.ensure_bucket()
        job = services.jobs.store.create("meeting-transcription", {})
        key = f"jobs/{job.id}/artifacts/audio.ogg"
        info = blobs.put(key, DATA)
        services.jobs.store.add_artifact(job.id, "audio.ogg", "audio/ogg", info.size, info.sha256, key)
        gets = _ranged_gets(blobs) if where == "s3" else []
        url = f"/v1/jobs/{job.id}/artifacts/audio.ogg"

        part = client.get(url, headers={"Range": "bytes=1000000-1250009"})
        assert part.status_code == 206
        assert part.content == DATA[1_000_000:1_250_010]
        assert part.headers["content-range"] == f"bytes 1000000-1250009/{len(DATA)}"
        tail = client.get(url, headers={"Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, DATA[-10:])
        if where == "s3":  # three pieces for the first range, one for the second, and not a byte more
            assert gets == [
                ("bytes=1000000-1099999", 100_000),
                ("bytes=1100000-1199999", 100_000),
                ("bytes=1200000-1250009", 50_010),
                (f"bytes={len(DATA) - 10}-{len(DATA) - 1}", 10),
            ]
        whole = client.get(url)
        assert (whole.status_code, whole.content) == (200, DATA)
        assert client.get(url, headers={"Range": f"bytes={len(DATA)}-"}).status_code == 416

        blobs.delete(key)  # the row without its blob
        for headers in ({"Range": "bytes=0-9"}, {}):
            missing = client.get(url, headers=headers)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "artifact_missing"
