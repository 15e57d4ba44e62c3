"""``BlobCache``: a process's local copies of S3 blobs it wrote or read, checked against a version register in Redis.

In a cluster one job's steps run on whichever node takes them, and a step often reads what an earlier step wrote
(the meeting's decoded audio, read by three later steps; the presentation's slides and narrations). The S3 store
(``modelhost.storage.s3``) keeps a local copy of each blob it puts or gets, under its ETag, and serves a later read
from that copy (whole, or a range of it: ``read_range``) only when the register says the blob's current ETag is that
one:

* a put first marks the blob's register entry as pending (its own token), then uploads, then records the new ETag
  only if its mark is still there (a put that fails, or a delete or another put meanwhile, leaves no ETag of it:
  reads go to S3); a delete removes the entries before the objects;
* a read looks the entry up (one Redis round trip, ~0.3 ms, against 5-10 ms for a GET on moto); no entry, another
  ETag, or Redis unreachable: the read goes to S3 (and keeps what it got, under the ETag S3 answered).

So a copy is never served once another process's put of that key (a step redelivered to another node after its
first node died, a retried step) has returned, and the copies die with their process (they live in a folder of
its own, removed at exit and, for a process killed with ``kill -9``, by the next process that opens the cache). Two
puts of one key running at once can still leave the register naming the ETag of the one S3 stored first (the marks
and the uploads may land in different orders), so that processes holding its copy read it while S3 holds the
other's bytes; job blobs are written under the job's lease (one writer at a time). Entries expire after
``VERSION_TTL_SECONDS`` (reads then go to S3).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from modelhost.storage.files import process_dir, remove_process_dir

VERSION_PREFIX = "modelhost:blobver:"
VERSION_TTL_SECONDS = 24 * 3600
#: A put's register entry while it uploads: ``pending:<token>`` (never an ETag, so no copy matches it).
PENDING = "pending:"
#: The ETag replaces the put's own pending mark only: a delete or a later put since leaves the entry as they made it.
_PUT_DONE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) and 1 or 0 end
return 0
"""
#: A blob bigger than 1/MAX_ENTRY_FRACTION of the cache is never copied (256 MiB: copies of up to 64 MiB).
MAX_ENTRY_FRACTION = 4


class BlobCacheUnavailable(Exception):
    """The register could not be updated before a put or delete (the caller reports storage as unavailable)."""


class BlobCache:
    def __init__(self, folder: Path, redis_url: str, max_bytes: int, namespace: str) -> None:
        import redis

        self.max_bytes = max_bytes
        self.max_entry = max(1, max_bytes // MAX_ENTRY_FRACTION)
        self.namespace = namespace  # the bucket: keys of two buckets never meet
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        # its own folder; those of processes killed before they could remove theirs go
        self.root = process_dir(folder, "blobcache-")
        weakref.finalize(self, remove_process_dir, self.root)  # at exit too
        self._lock = threading.Lock()
        #: name → (etag, size, file), least recently used first
        self._entries: OrderedDict[str, tuple[str, int, Path]] = OrderedDict()
        self._bytes = 0
        self._serial = 0

    def _register(self, name: str) -> str:
        return f"{VERSION_PREFIX}{self.namespace}/{name}"

    # -- the register ------------------------------------------------------------------------------------------
    def forget(self, names: list[str], token: str | None = None) -> None:
        """Before a put (``token``: the put's own, marks the entry as pending) or a delete (removes the entries) of
        ``names``: no process may serve its copy of them any more."""
        import redis

        with self._lock:
            for name in names:
                self._drop(name)
        if not names:
            return
        try:
            if token is not None:
                with self.redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.set(self._register(name), PENDING + token, ex=VERSION_TTL_SECONDS)
                    pipe.execute()
            else:
                self.redis.delete(*(self._register(n) for n in names))
        except redis.RedisError as exc:
            raise BlobCacheUnavailable(f"the blob version register (Redis) is unreachable: {exc}") from exc

    def current(self, name: str) -> BinaryIO | None:
        """The local copy of ``name``, open, when the register names its ETag; None: read it from S3."""
        import redis

        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            return None
        try:
            version = self.redis.get(self._register(name))
        except redis.RedisError:
            return None
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            if not isinstance(version, bytes) or version.decode() != entry[0]:
                self._drop(name)  # changed or deleted since: this copy is never current again
                return None
            self._entries.move_to_end(name)
            try:
                return entry[2].open("rb")  # open under the lock: an eviction unlinks it only after
            except OSError:
                self._drop(name)
                return None

    # -- copies ------------------------------------------------------------------------------------------------
    def writer(self, size: int) -> CopyWriter | None:
        """A copy of ``size`` bytes being written (None: too big to keep)."""
        if size > self.max_entry:
            return None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".in-")
        except OSError:
            return None
        return CopyWriter(self, os.fdopen(fd, "w+b"), Path(tmp))

    def published(self, name: str, token: str, etag: str) -> None:
        """This process's put of ``name`` (``token``) uploaded ``etag``: the register names it now — unless a delete
        or another put came since (best effort: without an entry no copy is served)."""
        with contextlib.suppress(Exception):
            self.redis.eval(_PUT_DONE, 1, self._register(name), PENDING + token, etag, VERSION_TTL_SECONDS)

    def _keep(self, name: str, etag: str | None, file: BinaryIO, tmp: Path) -> None:
        """Keep the copy in ``tmp`` as ``name`` at ``etag`` (served while the register names that ETag)."""
        try:
            file.close()
            size = tmp.stat().st_size
            if not etag or size > self.max_entry:
                raise OSError("not kept")
        except OSError:  # a full disk: no copy, the blob is read from S3 next time
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            self._serial += 1
            path = self.root / f"{self._serial:012d}"
            try:
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
                return
            self._drop(name)
            self._entries[name] = (etag, size, path)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= entry[1]
            entry[2].unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        remove_process_dir(self.root)
        with contextlib.suppress(Exception):
            self.redis.close()


class CopyWriter:
    """A copy being written while a blob is put or got (``BlobCache.writer``). A write that fails (a full disk)
    discards the copy and makes the rest no-ops: it costs the copy, never the put or the read."""

    def __init__(self, cache: BlobCache, file: BinaryIO, tmp: Path) -> None:
        self.cache = cache
        self.file: BinaryIO | None = file
        self.tmp = tmp

    def write(self, data: bytes) -> None:
        if self.file is None:
            return
        try:
            self.file.write(data)
        except OSError:
            self.discard()

    def keep(self, name: str, etag: str | None) -> None:
        """Keep what was written as ``name`` at ``etag`` (served while the register names that ETag)."""
        if self.file is not None:
            file, self.file = self.file, None
            self.cache._keep(name, etag, file, self.tmp)

    def discard(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            with contextlib.suppress(OSError):
                file.close()  # flushes what is buffered: on a full disk that fails again (the file is closed anyway)
            self.tmp.unlink(missing_ok=True)
