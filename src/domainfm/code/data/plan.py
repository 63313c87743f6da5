"""Planning a packing run: which repositories go to which split and which shard (metadata only).

The plan is a pure function of the corpus metadata and the settings (never of `--workers`), and it
is saved as `PACKED_DIR/_work/plan.json` before any shard is written, so a rerun after a crash picks
up exactly the same work units.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from domainfm.core.errors import require

NO_REPO = "(no repo)"  # files whose repo_name is null are grouped under this name


def scan_repos(files: list[Path]) -> tuple[dict[str, list[list[int]]], dict[str, int]]:
    """Read (repo_name, size) of every row: repo -> [[file_idx, row_idx, size], ...]. Streams the corpus."""
    pq = require("pyarrow.parquet", "code")
    repos: dict[str, list[list[int]]] = {}
    counts = {"rows": 0, "no_repo_name": 0}
    for fi, f in enumerate(files):
        pf = pq.ParquetFile(f)
        cols = [c for c in ("repo_name", "size") if c in pf.schema_arrow.names]
        row = 0
        for batch in pf.iter_batches(batch_size=65536, columns=cols):
            names = batch.column(cols.index("repo_name")).to_pylist()
            sizes = batch.column(cols.index("size")).to_pylist() if "size" in cols else [None] * len(names)
            for name, size in zip(names, sizes, strict=True):
                if not name:
                    counts["no_repo_name"] += 1
                    name = NO_REPO
                repos.setdefault(name, []).append([fi, row, int(size or 0)])
                row += 1
        counts["rows"] += row
    return repos, counts


def _repo_key(seed: int, repo: str) -> int:
    return int.from_bytes(hashlib.sha256(f"split\x00{seed}\x00{repo}".encode("utf-8", "surrogatepass"))
                          .digest()[:8], "big")


def split_repos(repos: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out whole repositories: (train, val).

    Repositories are ranked by a seeded hash; the first round(val_fraction * n) (at least one when
    val_fraction > 0 and there are two or more repositories, never all) form the validation split.
    No repository is in both splits by construction.
    """
    ranked = sorted(repos, key=lambda r: (_repo_key(seed, r), r))
    n_val = 0
    if val_fraction > 0 and len(ranked) >= 2:
        n_val = min(len(ranked) - 1, max(1, round(val_fraction * len(ranked))))
    return ranked[n_val:], ranked[:n_val]


def make_units(split: str, repos: list[str], members: dict[str, list[list[int]]],
               shard_bytes: int, max_files: int = 50_000) -> list[dict[str, Any]]:
    """Cut a split's repositories (in order) into work units of about `shard_bytes` of source each.

    A repository is never cut (its sample is built whole); each unit becomes one shard file.
    """
    return make_units_from_entries(split, [(r, 0, members[r]) for r in repos], shard_bytes, max_files)


def make_units_from_entries(split: str, entries: list[tuple[str, int, list[list[int]]]], shard_bytes: int,
                            max_files: int = 50_000) -> list[dict[str, Any]]:
    """`make_units` over (repo, copy index, [[file_idx, row_idx, size], ...]) entries (a data mixture makes
    copies of a repository, `mixture.mixture_entries`). A unit lists `[repo, [[file_idx, row_idx], ...]]`,
    with the copy index as a third element when it is above 0 (so a plan without a mixture is unchanged)."""
    units: list[dict[str, Any]] = []
    cur: list[list[Any]] = []
    size = n_files = 0

    def flush() -> None:
        nonlocal cur, size, n_files
        if cur:
            units.append({"split": split, "file": f"{split}/{len(units):05d}.bin", "repos": cur})
        cur, size, n_files = [], 0, 0

    for r, copy, refs in entries:
        cur.append([r, [[fi, ri] for fi, ri, _ in refs]] + ([copy] if copy else []))
        size += sum(s for _, _, s in refs)
        n_files += len(refs)
        if size >= shard_bytes or n_files >= max_files:
            flush()
    flush()
    return units
