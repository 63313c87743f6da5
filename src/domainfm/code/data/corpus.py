"""Finding and streaming the curated corpus (`CURATED_DIR/data/*.parquet`, written by `code curate`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from domainfm.core.errors import UserError, require

REQUIRED_COLUMNS = ("repo_name", "path", "content")


def corpus_shards(corpus: str | Path) -> list[Path]:
    """The Parquet shards of a corpus, sorted: `DIR/data/*.parquet`, else `DIR/*.parquet`, or one file."""
    p = Path(corpus)
    if p.is_file():
        if p.suffix != ".parquet":
            raise UserError(f"{p}: not a Parquet file")
        files = [p]
    elif p.is_dir():
        files = sorted((p / "data").glob("*.parquet")) or sorted(p.glob("*.parquet"))
    else:
        raise UserError(f"corpus not found: {p}")
    if not files:
        raise UserError(f"{p}: no Parquet shards (expected {p}/data/*.parquet from `domainfm code curate`)")
    pq = require("pyarrow.parquet", "code")
    for f in files:
        try:
            names = set(pq.read_schema(f).names)
        except Exception as exc:  # pyarrow raises several types for a corrupt/non-Parquet file
            raise UserError(f"{f}: not a readable Parquet file ({exc})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise UserError(f"{f}: missing column(s) {', '.join(missing)}; is this a curated corpus?")
    return files


def iter_contents(files: list[Path], batch_size: int = 256) -> Iterator[list[str]]:
    """Stream the `content` column batch by batch (never the whole corpus in memory)."""
    pq = require("pyarrow.parquet", "code")
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=["content"]):
            yield [c for c in batch.column(0).to_pylist() if c]


def count_rows(files: list[Path]) -> int:
    pq = require("pyarrow.parquet", "code")
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
