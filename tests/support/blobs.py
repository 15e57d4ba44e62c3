"""What every blob store's ``read_range`` must do (the same checks run on the local store and on S3)."""

from __future__ import annotations

import pytest

from modelhost.storage.blobs import BlobStore

#: 2.3 MB of a repeating 0..255 pattern: every offset's byte is known, and it spans more than one read chunk.
DATA = bytes(range(256)) * 9_000


def check_read_range(store: BlobStore, key: str) -> None:
    """``read_range`` reads like a file: the bytes of the range, short past the end, empty at or after the end or
    for a zero length; a missing key is a ``KeyError`` (an empty range too), a negative offset or length a
    ``ValueError``."""
    store.put(key, DATA)
    size = len(DATA)
    assert store.read_range(key, 1_000_001, 7) == DATA[1_000_001:1_000_008]  # in the middle
    assert store.read_range(key, 0, 3) == DATA[:3]  # at the start
    assert store.read_range(key, 0, size) == DATA  # the whole blob
    assert store.read_range(key, size - 5, 5) == DATA[-5:]  # ending exactly at the end
    assert store.read_range(key, size - 5, 100) == DATA[-5:]  # running past the end: short
    assert store.read_range(key, size, 10) == b""  # starting at the end
    assert store.read_range(key, size + 1000, 10) == b""  # starting past the end
    assert store.read_range(key, 500, 0) == b""  # empty
    store.put(key + "-empty", b"")
    assert store.read_range(key + "-empty", 0, 10) == b""
    with pytest.raises(KeyError):
        store.read_range(key + "-none", 0, 10)
    with pytest.raises(KeyError):
        store.read_range(key + "-none", 0, 0)
    for offset, length in ((-1, 5), (0, -1)):
        with pytest.raises(ValueError, match="invalid blob range"):
            store.read_range(key, offset, length)
    with pytest.raises(ValueError, match="invalid blob key"):
        store.read_range("../escape", 0, 1)
