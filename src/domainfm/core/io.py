"""Files: atomic writes (temp file + rename), JSONL, checksums, and Parquet helpers.

A killed process never leaves a partial file under its final name: everything is written to a
temporary sibling first and renamed into place, which POSIX makes atomic on one filesystem.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError, require


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# atomic_path's temporaries: mkstemp(prefix=".NAME.", suffix=".tmp") adds 8 characters of [a-z0-9_]
ATOMIC_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the `atomic_path` temporaries that a killed writer left under `folder`; their number.

    Never trusted (they never carry a final name), they would only pile up. Call it only as the folder's
    one writer (under `core.locks.output_lock`): another live writer's temporary looks the same.
    """
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if ATOMIC_TMP.match(name):
                Path(root, name).unlink(missing_ok=True)
                n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Read JSONL (optionally .gz). A malformed line is a `UserError` naming file and line."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{p}:{i}: not valid JSON ({exc.msg})") from None


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically as JSONL; returns the number of rows."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_parquet(path: str | os.PathLike[str], rows: list[dict[str, Any]], schema: Any = None) -> None:
    """Write rows to one Parquet file atomically (pyarrow; `schema` keeps empty shards typed)."""
    pa = require("pyarrow", "code")
    pq = require("pyarrow.parquet", "code")
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is not None else pa.table({})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet_rows(paths: Iterable[str | os.PathLike[str]], columns: list[str] | None = None,
                      batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream rows from Parquet files batch by batch (never loads a whole corpus)."""
    pq = require("pyarrow.parquet", "code")
    for p in paths:
        pf = pq.ParquetFile(p)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()
