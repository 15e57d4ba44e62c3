"""``S3BlobStore``: the blob store on an S3-compatible object store (MinIO, AWS), shared by a cluster's machines.

Keys map to ``<prefix>/<key>`` in one bucket. A PUT is atomic on S3 (a reader sees the old or the new object), as the
interface asks. Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role); ``MODELHOST_STORAGE__ENDPOINT_URL`` points at a non-AWS server. Unreachable storage
raises ``StorageUnavailable`` (503).

The store's temporary files (a put's spool above 64 MiB, ``open``'s spool above 8 MiB, ``local_path``'s copies) go
to the process's own folder under ``<data_dir>/tmp/s3`` (``process_dir``: a ``kill -9``'d process's folder is removed by
the next store), on the server's own disk rather than the system's temporary folder; that disk full (or its quota
used up) raises ``StorageFull`` (507), not an unexpected ``OSError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from modelhost.errors import ModelhostError, storage_full_in
from modelhost.storage.blobs import CHUNK, BlobInfo, _check_key, _check_range, _chunks
from modelhost.storage.files import process_dir, remove_process_dir

if TYPE_CHECKING:
    from modelhost.config import StorageSettings
    from modelhost.storage.cache import BlobCache

#: Objects up to this size are sent in one PUT; bigger ones go through boto3's multipart transfer.
SINGLE_PUT_BYTES = 64 * 1024 * 1024
#: Objects up to this size are read with one streamed GET; bigger ones through boto3's parallel ranged transfer, whose
#: HEAD and thread pool cost ~2x the latency of one GET (~10-13 ms vs ~5.5 ms per read on moto), which a job's small
#: reads (its recording, slides, narrations: 4 to 9 per job) paid on every one.
SINGLE_GET_BYTES = 64 * 1024 * 1024


class StorageUnavailable(ModelhostError):
    status_code = 503
    error_type = "service_unavailable"
    code = "storage_unavailable"


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


@contextlib.contextmanager
def _errors(key: str) -> Iterator[None]:
    """Missing object → ``KeyError``; a storage that cannot be reached → ``StorageUnavailable``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        if _missing(exc):
            raise KeyError(key) from None
        raise StorageUnavailable(f"object storage refused {key!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"object storage is unreachable: {exc}") from exc


@contextlib.contextmanager
def _local_disk(folder: Path | None, key: str) -> Iterator[None]:
    """No room left under ``folder`` for a temporary copy of the blob ``key`` → ``StorageFull`` (507)."""
    with storage_full_in(folder if folder is not None else tempfile.gettempdir(), f"a temporary copy of blob {key!r}"):
        yield


#: Uploads up to this size go without ``Expect: 100-continue`` (see ``_no_expect_for_small_bodies``).
CONTINUE_BYTES = 8 * 1024 * 1024


def _no_expect_for_small_bodies(request: Any, **_: Any) -> None:
    """botocore asks the server for a ``100 Continue`` before sending any PUT's body: a round trip that only pays
    off when a big body would be refused (measured on moto: ~1 ms, up to 8 ms under load, of a 4-13 ms small PUT).
    The header is not signed, so dropping it here, just before sending, is safe."""
    if "Expect" in request.headers and int(request.headers.get("Content-Length") or 0) <= CONTINUE_BYTES:
        del request.headers["Expect"]


class S3BlobStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        cache: BlobCache | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        #: Where spools and ``local_path`` copies are written: this process's own folder under ``temp_dir``, removed
        #: with the store (and, left by a ``kill -9``, by the next process's store); None: the system's temporary
        #: folder.
        self.temp_dir = process_dir(temp_dir) if temp_dir is not None else None
        if self.temp_dir is not None:
            weakref.finalize(self, remove_process_dir, self.temp_dir)  # at exit too
        self._temp = str(self.temp_dir) if self.temp_dir is not None else None  # ``tempfile``'s ``dir``
        #: Local copies of what this process put or got, checked against Redis (``modelhost.storage.cache``).
        self.cache = cache
        #: Object sizes learned by ranged reads, -1 once fetched whole for them (a hint only: which ranged read may
        #: fetch the whole object to keep a copy; see ``read_range``).
        self._sizes: dict[str, int] = {}

    @classmethod
    def from_settings(
        cls, storage: StorageSettings, broker_url: str | None = None, data_dir: Path | None = None
    ) -> S3BlobStore:
        """Temporary files under ``<data_dir>/tmp/s3/<pid>-…``. With ``broker_url`` and ``data_dir`` (a cluster's
        processes) and ``storage.cache_mb`` > 0, blobs are cached under ``<data_dir>/tmp``, checked against a version
        register in Redis."""
        import boto3
        from botocore.config import Config

        assert storage.url is not None
        bucket, _, prefix = storage.url[len("s3://") :].partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=storage.endpoint_url,
            region_name=storage.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                # botocore >= 1.36 adds a CRC32 to every upload: 1-2 ms more per PUT (measured on moto), on top of
                # what already guards the bytes: TLS on an https endpoint, the payload's SHA-256 in the request
                # signature on a plain-http one. (Checking the CRC32 on downloads costs nothing measurable: kept.)
                request_checksum_calculation="when_required",
            ),
        )
        client.meta.events.register("before-send.s3.PutObject", _no_expect_for_small_bodies)
        cache = None
        if broker_url and data_dir is not None and storage.cache_mb > 0:
            from modelhost.storage.cache import BlobCache

            cache = BlobCache(data_dir / "tmp", broker_url, storage.cache_mb * 1024 * 1024, bucket)
        return cls(client, bucket, prefix, cache, data_dir / "tmp" / "s3" if data_dir is not None else None)

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, first start against a fresh MinIO)."""
        from botocore.exceptions import ClientError

        with _errors(self.bucket):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.bucket)

    def _forget(self, key: str, names: list[str], token: str | None = None) -> None:
        """Before a put (``token``) or delete: the cached copies of ``names`` are never served again (by any
        process)."""
        if self.cache is None:
            return
        from modelhost.storage.cache import BlobCacheUnavailable

        try:
            self.cache.forget(names, token)
        except BlobCacheUnavailable as exc:
            raise StorageUnavailable(f"cannot change {key!r}: {exc}") from exc

    def put(self, key: str, data: bytes | Path | BinaryIO) -> BlobInfo:
        name = self._name(key)
        token = uuid.uuid4().hex
        self._forget(key, [name], token)
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=SINGLE_PUT_BYTES, dir=self._temp) as spool:
            size = 0
            with _local_disk(self.temp_dir, key):
                for chunk in _chunks(data):
                    digest.update(chunk)
                    size += len(chunk)
                    spool.write(chunk)
            spool.seek(0)
            with _errors(key):
                if size <= SINGLE_PUT_BYTES:
                    body = spool.read()
                    etag = self.client.put_object(Bucket=self.bucket, Key=name, Body=body).get("ETag")
                    if self.cache is not None and etag:
                        copy = self.cache.writer(size)
                        if copy is not None:
                            copy.write(body)
                            copy.keep(name, etag)
                        self.cache.published(name, token, etag)  # after the copy: no read finds the ETag without it
                else:
                    self.client.upload_fileobj(spool, self.bucket, name)
        return BlobInfo(key, size, digest.hexdigest())

    def get(self, key: str) -> bytes:
        out = io.BytesIO()
        self._download(key, out)
        return out.getvalue()

    def _download(self, key: str, out: BinaryIO, most: int | None = None) -> bool:
        """The object's bytes into ``out``: the cached copy when it is current, else one streamed GET (kept in the
        cache), or the ranged transfer for a big object. With ``most``: an object bigger than that (not cached) is
        not read — False, nothing written."""
        name = self._name(key)
        cached = self.cache.current(name) if self.cache is not None else None
        if cached is not None:
            with cached:
                shutil.copyfileobj(cached, out, CHUNK)
            return True
        with _errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=name)
            body = response["Body"]
            size = int(response.get("ContentLength", 0))
            if most is not None and size > most:
                body.close()
                self._learn(name, size, replace=True)
                return False
            if size > SINGLE_GET_BYTES:
                body.close()
                self.client.download_fileobj(self.bucket, name, out)
                return True
            etag = response.get("ETag")
            copy = self.cache.writer(size) if self.cache is not None and etag else None
            try:
                for chunk in iter(lambda: body.read(CHUNK), b""):
                    out.write(chunk)
                    if copy is not None:
                        copy.write(chunk)
            except BaseException:
                if copy is not None:
                    copy.discard()
                raise
            finally:
                body.close()
            if copy is not None:
                copy.keep(name, etag)
        return True

    def _learn(self, name: str, size: int, replace: bool = False) -> None:
        if len(self._sizes) >= 4096:  # a hint: forgetting them all now and then bounds it
            self._sizes.clear()
        if replace:
            self._sizes[name] = size
        else:
            self._sizes.setdefault(name, size)

    def open(self, key: str) -> BinaryIO:
        spool = tempfile.SpooledTemporaryFile(max_size=8 * CHUNK, dir=self._temp)  # noqa: SIM115 - caller closes
        try:
            with _local_disk(self.temp_dir, key):
                self._download(key, spool)  # type: ignore[arg-type]  # SpooledTemporaryFile is a binary stream
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool  # type: ignore[return-value]  # SpooledTemporaryFile is a seekable binary stream

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """The cached copy's bytes when it is current (a blob this process put or got whole), else one GET with
        ``Range: bytes=<offset>-<offset + length - 1>``. A ranged answer tells the object's size: a later read of a
        part of an object that small enough to keep a copy of (at most the cache's biggest entry) gets it whole
        once, keeps the copy and serves the part from it (the meeting's decoded audio, read in chunks by three
        steps, is then one ranged GET and one whole GET per node, not one GET per chunk); a bigger one is only ever
        read in ranges, and so is one whose whole fetch left no current copy (a full disk, a put by another
        process since). An empty range costs a HEAD (a missing key is a ``KeyError`` here too); a range that starts
        past the end is S3's 416, read as ``b""``."""
        from botocore.exceptions import ClientError

        _check_range(offset, length)
        name = self._name(key)
        cached = self.cache.current(name) if self.cache is not None else None
        if cached is not None:
            with cached:
                cached.seek(offset)
                return cached.read(length)
        if length == 0:
            self.size(key)
            return b""
        if self.cache is not None and 0 <= self._sizes.get(name, -1) <= self.cache.max_entry:
            whole = io.BytesIO()
            if self._download(key, whole, most=self.cache.max_entry):  # False: it has grown since (nothing read)
                self._learn(name, -1, replace=True)  # once: without a copy after it (a full disk), ranges again
                return whole.getbuffer()[offset : offset + length].tobytes()
        with _errors(key):
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=name, Range=f"bytes={offset}-{offset + length - 1}"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""
                raise
            body = response["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        total = str(response.get("ContentRange", "")).rpartition("/")[2]  # bytes <first>-<last>/<size>
        if self.cache is not None and total.isdigit():
            self._learn(name, int(total))
        return data

    def size(self, key: str) -> int:
        with _errors(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=self._name(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except KeyError:
            return False
        return True

    def delete(self, key: str) -> None:
        """The key itself rides in the first page's batch delete: two requests (list, delete) for a folder of up
        to 1000 blobs or a single blob, where a DELETE of the key before the listing made three."""
        name = self._name(key)
        with _errors(key):
            batch = [{"Key": name}]
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=name + "/"):
                batch += [{"Key": item["Key"]} for item in page.get("Contents", [])]
                while batch:
                    objects, batch = batch[:1000], batch[1000:]  # at most 1000 keys per DeleteObjects
                    self._forget(key, [o["Key"] for o in objects])
                    response = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
                    errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
                    if errors:
                        raise StorageUnavailable(f"object storage refused to delete {key!r}: {errors[0]}")
            if batch:  # no page at all (never on S3, which answers an empty listing): the key alone
                self._forget(key, [name])
                self.client.delete_object(Bucket=self.bucket, Key=name)

    def url(self, key: str) -> str:
        with _errors(key):
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=3600
            )
        return url

    @contextlib.asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        import asyncio

        with _local_disk(self.temp_dir, key):
            fd, tmp = tempfile.mkstemp(prefix="modelhost-blob-", suffix=Path(key).suffix, dir=self._temp)
        os.close(fd)
        path = Path(tmp)
        try:

            def download() -> None:
                with _local_disk(self.temp_dir, key), open(tmp, "wb") as out:
                    self._download(key, out)

            await asyncio.to_thread(download)
            yield path
        finally:
            path.unlink(missing_ok=True)
