"""Small curated-style corpora built from the Python standard library, for tests and examples.

Real source files, laid out like `domainfm code curate` output (`DIR/data/*.parquet` with the curated
columns); repositories are stdlib packages. Rows are interleaved across shards and written in small
row groups, so readers are exercised on repositories that span shards and row groups.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Any

from domainfm.core.errors import require

STDLIB_PACKAGES = ["json", "email", "http", "html", "urllib", "logging", "concurrent/futures", "xml/dom",
                   "asyncio", "unittest", "importlib", "sqlite3", "wsgiref", "zoneinfo", "tomllib"]


def stdlib_rows(n_repos: int = 6, files_per_repo: int = 6, max_file_bytes: int = 20_000) -> list[dict[str, Any]]:
    """Curated-style rows: up to `files_per_repo` .py files (sorted, <= max_file_bytes) of `n_repos` packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rows: list[dict[str, Any]] = []
    for pkg in STDLIB_PACKAGES:
        d = root / pkg
        files = [f for f in sorted(d.glob("*.py")) if f.stat().st_size <= max_file_bytes]
        if len(files) < 2:
            continue
        for f in files[:files_per_repo]:
            data = f.read_bytes()
            blob = hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()
            rows.append({"swhid": f"swh:1:cnt:{blob}", "repo_name": f"python/{pkg.replace('/', '-')}",
                         "path": f"Lib/{pkg}/{f.name}", "language": "Python", "license_type": "permissive",
                         "licenses": ["PSF-2.0"], "content": data.decode("utf-8"), "size": len(data)})
        if len({r["repo_name"] for r in rows}) >= n_repos:
            break
    return rows


def write_corpus(out_dir: str | Path, rows: list[dict[str, Any]], n_shards: int = 2,
                 row_group_size: int = 4) -> Path:
    """Write rows round-robin into `out_dir/data/%05d.parquet`; returns `out_dir`."""
    pa = require("pyarrow", "code")
    pq = require("pyarrow.parquet", "code")
    data = Path(out_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for k in range(n_shards):
        part = rows[k::n_shards]
        if part:
            pq.write_table(pa.Table.from_pylist(part), data / f"{k:05d}.parquet", row_group_size=row_group_size)
    return Path(out_dir)


def make_stdlib_corpus(out_dir: str | Path, n_repos: int = 6, files_per_repo: int = 6,
                       max_file_bytes: int = 20_000) -> Path:
    return write_corpus(out_dir, stdlib_rows(n_repos, files_per_repo, max_file_bytes))
