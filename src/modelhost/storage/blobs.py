"""Blob store: where job inputs, intermediate files and artifacts live. Nothing else touches their paths.

One small interface (``BlobStore``) with a local implementation under ``<data_dir>/blobs`` and an S3-compatible one
(``MODELHOST_STORAGE__URL=s3://bucket/prefix``, ``modelhost.storage.s3``) that every machine of a cluster shares.
Keys are ``/``-separated relative names (``jobs/<id>/work/audio.pcm``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from modelhost.errors import storage_full_in

if TYPE_CHECKING:
    from modelhost.config import StorageSettings

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    def put(self, key: str, data: bytes | Path | BinaryIO) -> BlobInfo:
        """Store ``data`` (bytes, a local file to copy, or a readable binary stream) under ``key``, replacing
        what was there (atomically: a reader sees the old or the new blob, never half of one). No room left for it
        on a local disk → ``StorageFull`` (507), nothing changed."""

    def get(self, key: str) -> bytes:
        """The whole blob; ``KeyError`` when there is none."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary stream over the whole blob (close it); ``KeyError`` when there is none. On S3 this
        downloads the whole object first: to read a part, use ``read_range``."""

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the blob, read like a file: short when the range runs past the end,
        ``b""`` when it starts at or after the end (or ``length`` is 0). Only the range is fetched (one ranged GET
        on S3, or the node's cached copy). ``KeyError`` when there is no blob (also for an empty range);
        ``ValueError`` for a negative ``offset`` or ``length``."""

    def size(self, key: str) -> int:
        """Size in bytes; ``KeyError`` when there is none."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete one blob, or every blob under ``key/`` when ``key`` names a folder. Missing keys are fine."""

    def url(self, key: str) -> str:
        """Where the blob can be fetched from outside (``file://`` locally, a presigned URL on S3)."""

    def local_path(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """``async with store.local_path(key) as path``: a local file with the blob's bytes for tools that need a
        path (ffmpeg); on the local store it is the blob itself (read it, never write it)."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"invalid blob range: offset {offset}, length {length} (neither may be negative)")


class LocalBlobStore:
    """Blobs as files under ``root``; writes go to a temporary file in the same folder and are renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes | Path | BinaryIO) -> BlobInfo:
        """A full disk (or used-up quota) under ``root`` → ``StorageFull`` (507) naming it, no partial file left and
        the blob that was there (if any) unchanged."""
        target = self._path(key)
        digest = hashlib.sha256()
        size = 0
        with storage_full_in(self.root, f"blob {key!r}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".put-")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in _chunks(data):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return BlobInfo(key, size, digest.hexdigest())

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        _check_range(offset, length)
        with self.open(key) as stream:
            stream.seek(offset)
            return stream.read(length)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def url(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    @contextlib.asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        yield path


def _chunks(data: bytes | Path | BinaryIO) -> Iterable[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    if isinstance(data, Path):
        with data.open("rb") as stream:
            yield from iter(lambda: stream.read(CHUNK), b"")
        return
    yield from iter(lambda: data.read(CHUNK), b"")


def build_blob_store(
    data_dir: Path, storage: StorageSettings | None = None, broker_url: str | None = None
) -> BlobStore:
    """The S3 store when ``storage.url`` is set (caching what it puts and gets when ``broker_url`` is set too:
    ``modelhost.storage.cache``), else the local one under ``<data_dir>/blobs``."""
    if storage is not None and storage.url:
        from modelhost.storage.s3 import S3BlobStore

        return S3BlobStore.from_settings(storage, broker_url, data_dir)
    return LocalBlobStore(data_dir / "blobs")
