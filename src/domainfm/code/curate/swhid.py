"""Software Heritage content identifiers: ``swh:1:cnt:`` + the git blob SHA-1 of the raw bytes."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

PREFIX = "swh:1:cnt:"


def git_blob_sha1(data: bytes) -> str:
    """The id `git hash-object` gives these bytes: sha1(b"blob <len>\\0" + data)."""
    h = hashlib.sha1(b"blob %d\x00" % len(data))
    h.update(data)
    return h.hexdigest()


def swhid(data: bytes) -> str:
    return PREFIX + git_blob_sha1(data)


def swhid_stream(fh: BinaryIO, size: int, chunk: int = 1 << 20) -> str:
    """SWHID of a file of known `size` without holding it in memory (used for oversized files)."""
    h = hashlib.sha1(b"blob %d\x00" % size)
    while block := fh.read(chunk):
        h.update(block)
    return PREFIX + h.hexdigest()
