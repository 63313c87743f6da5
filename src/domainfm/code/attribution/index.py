"""`build_index(corpus, out)`: one index shard (Bloom filter + tantivy index) per corpus shard.

Layout::

    INDEX/index.json                      format, version, corpus, n-gram width/stride, target rate
    INDEX/shards/<part-00000>/shard.json  the corpus shard's sha256, docs, n-grams, filter size (the marker)
    INDEX/shards/<part-00000>/membership.bloom
    INDEX/shards/<part-00000>/fulltext/   tantivy

Each index shard is built in a temporary folder and renamed into place, and `shard.json` is in it
before the rename, so after kill -9 a shard is either complete or absent; a rerun removes the leftover
temporary folders and builds what is missing. Indexing the same corpus again adds only the shards that
are new (a shard whose bytes changed is rebuilt; a shard that left the corpus leaves the index), which
is what a growing corpus needs, and a query fans out over the shards, so the same layout works when
the shards live on several disks.

Memory is bounded per shard, whatever the corpus size: the shard's Bloom filter (about 15.6 bits per
n-gram at p = 1e-3: 2 MB per million n-grams, i.e. per MB of text at stride 1), one Arrow batch of `batch_rows`
files (<= 64 MB at the curation's 1 MB file cap), the hash temporaries of the largest file (about
40 bytes per byte of it), and tantivy's writer heap (64 MB).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainfm.code.attribution.fulltext import META_FIELDS, FullTextSearcher, FullTextWriter
from domainfm.code.attribution.membership import MembershipFilter
from domainfm.code.attribution.ngrams import ngram_hashes
from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json, sha256_file
from domainfm.core.progress import get_logger, progress

log = get_logger("index")
FORMAT = "domainfm-trace-index"
VERSION = 1


@dataclass
class IndexConfig:
    width: int = 50  # n-gram width in UTF-8 bytes (Data Portraits: 50 characters)
    stride: int = 1  # corpus n-gram stride; 1 = every substring of >= width bytes is found
    fpr: float = 1e-3  # target false-positive rate of one n-gram lookup in one shard's filter
    batch_rows: int = 64  # files per Arrow batch (bounds memory)

    def validate(self) -> None:
        if self.width < 8:
            raise UserError(f"--width must be at least 8 bytes (got {self.width})")
        if self.stride < 1 or self.stride > self.width:
            raise UserError(f"--stride must be between 1 and the width {self.width} (got {self.stride})")
        if not 0 < self.fpr < 0.5:
            raise UserError(f"--fpr must be in (0, 0.5) (got {self.fpr})")


def kill_point(name: str) -> None:
    """Test hook: ``DOMAINFM_INDEX_KILL_AT=<name>`` SIGKILLs this process here (a real kill -9)."""
    if os.environ.get("DOMAINFM_INDEX_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def corpus_shards(corpus: Path) -> list[Path]:
    data = corpus / "data"
    shards = sorted(data.glob("*.parquet")) if data.is_dir() else []
    if not shards:
        raise UserError(f"{corpus} is not a curated corpus (no data/*.parquet; write one with `code curate`)")
    return shards


def _check_manifest(out: Path, corpus: Path, cfg: IndexConfig) -> dict[str, Any]:
    manifest = {"format": FORMAT, "version": VERSION, "corpus": str(corpus), "unit": "utf8_bytes",
                "width": cfg.width, "stride": cfg.stride, "fpr_per_shard": cfg.fpr,
                "guaranteed_min_bytes": cfg.width + cfg.stride - 1}
    path = out / "index.json"
    if path.exists():
        old = read_manifest(out)
        if old["corpus"] != str(corpus):
            raise UserError(f"{out} indexes another corpus ({old['corpus']}); use a new -o")
        for key in ("width", "stride", "fpr_per_shard"):
            if old[key] != manifest[key]:
                raise UserError(f"{out} was built with {key}={old[key]}, not {manifest[key]}; use a new -o")
        return old
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not an index folder; choose a new -o")
    atomic_write_json(path, manifest)
    return manifest


def read_manifest(index: Path) -> dict[str, Any]:
    path = index / "index.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{index} is not an index folder (no index.json; build one with `code index`)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a domainfm trace index")
    if int(manifest.get("version", 0)) > VERSION:
        raise UserError(f"{index} has index format version {manifest['version']}; this domainfm reads "
                        f"version {VERSION} and older: upgrade domainfm or rebuild the index")
    return manifest


def _count_ngrams(pf: Any, cfg: IndexConfig) -> int:
    import pyarrow.compute as pc

    total = 0
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=["content"]):
        lengths = pc.binary_length(batch.column(0).cast("large_binary")).to_numpy(zero_copy_only=False)
        n = lengths[lengths >= cfg.width] - cfg.width + 1
        total += int(((n + cfg.stride - 1) // cfg.stride).sum())
    return total


def _build_shard(src: Path, dest: Path, sha: str, cfg: IndexConfig, rank: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    n_items = _count_ngrams(pf, cfg)
    bloom = MembershipFilter(n_items, cfg.fpr)
    writer = FullTextWriter(dest / "fulltext")
    columns = [c for c in ("content", *META_FIELDS) if c in pf.schema_arrow.names]
    row = n_bytes = 0
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=columns):
        for rec in batch.to_pylist():
            content = rec.get("content") or ""
            data = content.encode("utf-8")
            n_bytes += len(data)
            bloom.add(ngram_hashes(data, cfg.width, cfg.stride))
            writer.add(content, {**rec, "shard": src.name}, row)
            row += 1
        kill_point(f"shard-{rank}-batch")
    writer.close()
    bloom.save(dest / "membership.bloom")
    info = {"corpus_shard": src.name, "sha256": sha, "bytes": src.stat().st_size, "n_docs": row,
            "content_bytes": n_bytes, "n_ngrams": n_items, "bloom_bytes": bloom.size_bytes,
            "n_blocks": bloom.plan.n_blocks, "k": bloom.plan.k, "fpr": bloom.plan.fpr}
    atomic_write_json(dest / "shard.json", info)
    return info


def _index_shard(src: Path, root: Path, sha: str, cfg: IndexConfig, rank: int) -> dict[str, Any]:
    """Build one index shard in ``root/.tmp-<name>`` and rename it into place (an executor call)."""
    dest, tmp = root / src.stem, root / f".tmp-{src.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    info = _build_shard(src, tmp, sha, cfg, rank)
    kill_point(f"shard-{rank}-before-rename")
    if dest.exists():  # the corpus shard changed: replace its index shard
        log.info("corpus shard %s changed; rebuilding its index shard", src.name)
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return info


def build_index(corpus: Path, out: Path, cfg: IndexConfig | None = None, *, executor: str = "local",
                workers: int = 1, pool_opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index every shard of `corpus` not yet in `out`; returns a summary (shards new / reused, rates).
    The missing shards run on `executor` (``local``: in this process, or `workers` processes; ``ray``)."""
    from domainfm.core.executor import get_pool

    cfg = cfg or IndexConfig()
    cfg.validate()
    corpus, out = Path(corpus).absolute(), Path(out).absolute()
    if not corpus.is_dir():
        raise UserError(f"{corpus} is not a folder")
    shards = corpus_shards(corpus)
    manifest = _check_manifest(out, corpus, cfg)
    root = out / "shards"
    root.mkdir(parents=True, exist_ok=True)
    for tmp in root.glob(".tmp-*"):  # a build killed mid-shard: start that shard again
        shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    reused, todo = [], []
    wanted = {p.stem for p in shards}
    for rank, src in enumerate(shards):
        sha = sha256_file(src)
        marker = root / src.stem / "shard.json"
        if marker.exists() and json.loads(marker.read_text()).get("sha256") == sha:
            reused.append(src.stem)
        else:
            todo.append((src, root, sha, cfg, rank))
    built: dict[int, dict[str, Any]] = {}
    with get_pool(executor, workers, **(pool_opts or {})) as pool, \
            progress(total=len(todo), desc="index shards", unit="shard") as bar:
        for i, res in pool.map_unordered(_index_shard, todo):
            built[i] = res.result()  # a failed shard stops the build; a rerun builds what is missing
            bar.update(1)
    new = [todo[i][0].stem for i in sorted(built)]
    text_bytes = sum(b["content_bytes"] for b in built.values())
    bytes_indexed = sum(todo[i][0].stat().st_size for i in built)
    for stale in sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.name not in wanted):
        log.info("corpus shard %s is gone; removing its index shard", stale.name)
        shutil.rmtree(stale)
    seconds = time.perf_counter() - t0
    summary = {**manifest, **describe(out), "shards_new": new, "shards_reused": reused, "seconds": round(seconds, 3),
               "text_mb_per_s": round(text_bytes / 1e6 / seconds, 3) if new and seconds > 0 else None,
               "parquet_mb_per_s": round(bytes_indexed / 1e6 / seconds, 3) if new and seconds > 0 else None}
    return summary


def describe(index: Path) -> dict[str, Any]:
    """Totals over the index shards, and the false-positive rate of a lookup against all of them."""
    infos = [json.loads(p.read_text()) for p in sorted((index / "shards").glob("*/shard.json"))]
    miss = math.prod(1.0 - i["fpr"] for i in infos)
    return {"n_shards": len(infos), "n_docs": sum(i["n_docs"] for i in infos),
            "n_ngrams": sum(i["n_ngrams"] for i in infos), "bloom_bytes": sum(i["bloom_bytes"] for i in infos),
            "fpr_index": 1.0 - miss}


@dataclass
class IndexShard:
    name: str
    info: dict[str, Any]
    bloom: MembershipFilter
    fulltext: FullTextSearcher


def load_shards(index: Path) -> tuple[dict[str, Any], list[IndexShard]]:
    """The manifest and every complete shard of an index (a clear error when it is not one)."""
    manifest = read_manifest(index)
    shards = []
    for marker in sorted((index / "shards").glob("*/shard.json")):
        info = json.loads(marker.read_text())
        folder = marker.parent
        try:
            bloom = MembershipFilter.load(folder / "membership.bloom", info)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{folder} is damaged ({exc}); delete it and rerun `code index`") from None
        shards.append(IndexShard(folder.name, info, bloom, FullTextSearcher(folder / "fulltext")))
    if not shards:
        raise UserError(f"{index} has no complete shard yet (rerun `code index` to finish it)")
    return manifest, shards
