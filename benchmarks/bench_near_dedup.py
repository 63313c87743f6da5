"""Near-dedup benchmark: our vectorised MinHash vs datatrove's 4-stage MinHash pipeline, same corpus.

Corpus: the Python standard library + this venv's site-packages (every UTF-8 source file of a known
language, <= 1 MB, unique content, >= 5 tokens), written to `--workers` Parquet files that both
pipelines read. Both use 5-gram shingles of ``[^A-Za-z_0-9]``-split tokens (datatrove gets the same
word tokenizer and no extra normalisation), 25 bands x 10 rows (250 hashes; ours draws 256 and bands
the first 250) and union-find clustering. Ours: signatures on `--workers` processes (the fused numba
kernel of `minhash_jit.py`), then the pipeline's LSH (the classic 25 x 10 banding plus `lsh_rounds` - 1
bandings of shuffled columns, candidates verified at an estimated Jaccard >= `verify_jaccard`) and
union-find in numpy, kept files written to Parquet. datatrove: signature -> buckets -> cluster -> filter
with LocalPipelineExecutor (`--workers` workers, 25 bucket tasks).

Reported: files/s of each (median of `--repeats`) and the ratio; candidate duplicate pairs each found
and the fraction with true Jaccard >= 0.7 on a sample; recall against brute force: for `--sample`
random files, every file with true Jaccard >= 0.7 is found, and we count how many of those pairs each
method put in one cluster. `--pipeline` also times the whole `domainfm code curate` on the corpus.

    .venv/bin/python benchmarks/bench_near_dedup.py --max-files 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import struct
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from domainfm.code.curate.config import CurateConfig
from domainfm.code.curate.dedup import UnionFind, near_clusters
from domainfm.code.curate.languages import detect_language
from domainfm.code.curate.minhash import MinHasher, shingle_hashes

TOKEN_SPLIT = r"[^A-Za-z_0-9]+"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the machine is shared: wall time is noisy)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def source_roots() -> list[Path]:
    """The standard library, then this environment's site-packages."""
    return [Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]),
            Path(sysconfig.get_paths()["purelib"])]


def source_paths() -> list[tuple[Path, Path]]:
    """(root, path) of every file of a known language under `source_roots()`, in a stable order."""
    roots = source_roots()
    paths = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                                 and not (d == "site-packages" and root == roots[0]))
            paths += [(root, Path(dirpath) / f) for f in sorted(filenames) if detect_language(f) is not None]
    return paths


def read_source(p: Path) -> str | None:
    """The UTF-8 text of a real (not symlinked) source file of at most 1 MB; None otherwise."""
    try:
        if p.is_symlink() or p.stat().st_size > 1_000_000:
            return None
        return p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def collect(max_files: int, seed: int = 0) -> list[str]:
    """Source files of known languages under the roots; a seeded subset of paths when max_files > 0."""
    paths = [p for _, p in source_paths()]
    if max_files and len(paths) > max_files * 1.3:  # a margin for duplicates and undecodable files
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), int(max_files * 1.3), replace=False))
        paths = [paths[i] for i in idx]
    texts, seen = [], set()
    for p in paths:
        text = read_source(p)
        if text is None or text in seen or len(text.split()) < 5:
            continue
        seen.add(text)
        texts.append(text)
    return texts[:max_files] if max_files else texts


def write_shards(texts: list[str], folder: Path, n: int) -> list[int]:
    """n Parquet files of contiguous slices; returns the global id offset of each file."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(texts), n + 1).astype(int)
    for r in range(n):
        ids = list(range(bounds[r], bounds[r + 1]))
        pq.write_table(pa.table({"id": [str(i) for i in ids], "text": texts[bounds[r]:bounds[r + 1]]}),
                       folder / f"{r:05d}.parquet")
    return bounds[:-1].tolist()


# ------------------------------------------------------------------------------------------------ ours


def _our_signatures(path: str) -> np.ndarray:
    # the kernel reads the Parquet column's Arrow buffers in place: no Python strings are built
    return MinHasher(256, 5).signatures_arrow(pq.read_table(path, columns=["text"]).column("text"))


def run_ours(folder: Path, out: Path, workers: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    cfg = CurateConfig()  # the pipeline's defaults: 25 x 10 bands, LSH rounds, verification
    t0 = time.perf_counter()
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    with mp.get_context("fork").Pool(workers) as pool:  # fork, like datatrove's executor here
        sigs = np.concatenate(pool.map(_our_signatures, files))
    t1 = time.perf_counter()
    n = len(sigs)
    res = near_clusters(sigs, np.zeros(n, dtype=np.int64), np.arange(n), cfg.bands, cfg.rows, cfg.lsh_rounds,
                        cfg.verify_jaccard)
    t2 = time.perf_counter()
    keep = res.keeper == np.arange(n)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    for f in files:  # the filter stage: write the kept documents
        t = pq.read_table(f)
        mask = keep[start:start + t.num_rows]
        pq.write_table(t.filter(pa.array(mask)), out / Path(f).name, use_dictionary=["id"])
        start += t.num_rows
    elapsed = time.perf_counter() - t0
    print(f"    ours: signatures {t1 - t0:.1f}s, LSH + verify + union-find {t2 - t1:.1f}s "
          f"({res.n_candidates} candidates), write kept {time.perf_counter() - t2:.1f}s", flush=True)
    uf = UnionFind(n)
    for a, b in res.edges.tolist():
        uf.union(a, b)
    return elapsed, res.edges, uf.roots(), sigs


# ------------------------------------------------------------------------------------------- datatrove


def run_datatrove(folder: Path, work: Path, workers: int, offsets: list[int], n: int):
    import re

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.text import TextNormConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
    from loguru import logger

    logger.remove()

    class CodeTokenizer(WordTokenizer):  # the same tokens as ours: split on [^A-Za-z_0-9]
        def word_tokenize(self, text: str) -> list[str]:
            return [t for t in re.split(TOKEN_SPLIT, text) if t]

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    norm = TextNormConfig(lowercase=False, norm_whitespace=False, remove_punctuation=False,
                          norm_unicode_diacritics=False, norm_numbers=False)
    cfg = MinhashConfig(n_grams=5, num_buckets=25, hashes_per_bucket=10, norm_config=norm)
    sig_step = MinhashDedupSignature(str(work / "sigs"), config=cfg, language=CodeTokenizer())
    sig_step._hash_func = xxh64_str  # datatrove 0.10 passes str to xxhash, which xxhash 4 rejects
    n_files = len(offsets)
    sig, buckets, clusters, kept = work / "sigs", work / "buckets", work / "clusters", work / "kept"
    t0 = time.perf_counter()
    LocalPipelineExecutor([ParquetReader(str(folder)), sig_step],
                          tasks=n_files, workers=workers, logging_dir=str(work / "l1"), start_method="fork").run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(sig), str(buckets), config=cfg)],
                          tasks=cfg.num_buckets, workers=workers, logging_dir=str(work / "l2"),
                          start_method="fork").run()
    LocalPipelineExecutor([MinhashDedupCluster(str(buckets), str(clusters), config=cfg, save_cluster_id=True)],
                          tasks=1, workers=1, logging_dir=str(work / "l3"), start_method="fork").run()
    LocalPipelineExecutor([ParquetReader(str(folder)), MinhashDedupFilter(str(clusters)),
                           ParquetWriter(str(kept))], tasks=n_files, workers=workers,
                          logging_dir=str(work / "l4"), start_method="fork").run()
    elapsed = time.perf_counter() - t0
    pairs = []
    for f in sorted(buckets.glob("*.dups")):
        raw = f.read_bytes()
        for f1, d1, f2, d2 in struct.iter_unpack("<4I", raw):
            pairs.append((offsets[f1] + d1, offsets[f2] + d2))
    roots = np.arange(n)
    for f in sorted(clusters.glob("*.clusters")):  # (doc, cluster id) per clustered doc of a rank
        vals = np.frombuffer(f.read_bytes(), dtype="<u4").reshape(-1, 2)
        roots[offsets[int(f.stem)] + vals[:, 0]] = n + vals[:, 1]
    return elapsed, np.array(pairs, dtype=np.int64).reshape(-1, 2), roots


def xxh64_str(data: str | bytes) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


# --------------------------------------------------------------------------------------------- quality


def shingle_sets(texts: list[str]) -> list[np.ndarray]:
    return [np.unique(shingle_hashes(t)) for t in texts]


def precision(pairs: np.ndarray, sets: list[np.ndarray], k: int, rng: np.random.Generator) -> float:
    if len(pairs) == 0:
        return float("nan")
    pick = pairs[rng.choice(len(pairs), min(k, len(pairs)), replace=False)]
    ok = [true_j(sets[a], sets[b]) >= 0.7 for a, b in pick.tolist()]
    return float(np.mean(ok))


def true_j(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def brute_force_pairs(sets: list[np.ndarray], queries: np.ndarray, chunk: int = 50) -> list[tuple[int, int]]:
    """Every (q, j) with true Jaccard >= 0.7 for the query files q (exact, via shingle overlap).

    Vectorised: all shingles of the corpus in one array with their file ids; per chunk of queries, the
    (query, file) pairs that share a shingle are counted with one sort, which gives |q & j| exactly."""
    sizes = np.array([s.size for s in sets], dtype=np.int64)
    all_h = np.concatenate(sets)
    all_f = np.repeat(np.arange(len(sets), dtype=np.int64), sizes)
    n = len(sets)
    found: list[tuple[int, int]] = []
    for c in range(0, len(queries), chunk):
        qs = queries[c:c + chunk]
        qh = np.concatenate([sets[q] for q in qs])
        qf = np.repeat(qs.astype(np.int64), [sets[q].size for q in qs])
        order = np.argsort(qh, kind="stable")
        qh, qf = qh[order], qf[order]
        hit = np.isin(all_h, qh)
        hh, hf = all_h[hit], all_f[hit]
        lo, hi = np.searchsorted(qh, hh, "left"), np.searchsorted(qh, hh, "right")
        reps = hi - lo
        pair_f = np.repeat(hf, reps)  # one row per (shingle shared by file j and query q)
        idx = np.repeat(lo - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
        pair_q = qf[idx]
        keys, inter = np.unique(pair_q * n + pair_f, return_counts=True)
        q, j = keys // n, keys % n
        ok = (q != j) & (inter / (sizes[q] + sizes[j] - inter) >= 0.7)
        found += list(zip(q[ok].tolist(), j[ok].tolist(), strict=True))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-files", type=int, default=0, help="deterministic random subset (0 = all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sample", type=int, default=300, help="files/pairs sampled for recall/precision")
    ap.add_argument("--pipeline", action="store_true", help="also time the whole curate pipeline")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    try:
        t0 = time.perf_counter()
        texts = collect(args.max_files)
        folder = tmp / "corpus"
        offsets = write_shards(texts, folder, max(args.workers, 2))
        n = len(texts)
        print(f"corpus: {n} files, {sum(map(len, texts)) / 1e6:.1f} MB of text ({time.perf_counter() - t0:.0f}s "
              f"to collect); {args.workers} workers; {os.cpu_count()} CPUs", flush=True)
        ours_t, dt_t, ours_cpu, dt_cpu = [], [], [], []
        for rep in range(args.repeats):
            shutil.rmtree(tmp / "ours", ignore_errors=True)
            c0 = cpu_seconds()
            el, our_edges, our_roots, our_sigs = run_ours(folder, tmp / "ours", args.workers)
            ours_t.append(el)
            ours_cpu.append(cpu_seconds() - c0)
            print(f"  run {rep}: ours {el:.1f}s ({n / el:.0f} files/s), {ours_cpu[-1]:.1f} CPU-s", flush=True)
            if not args.skip_datatrove:
                shutil.rmtree(tmp / "dt", ignore_errors=True)
                c0 = cpu_seconds()
                el, dt_pairs, dt_roots = run_datatrove(folder, tmp / "dt", args.workers, offsets, n)
                dt_t.append(el)
                dt_cpu.append(cpu_seconds() - c0)
                print(f"  run {rep}: datatrove {el:.1f}s ({n / el:.0f} files/s), {dt_cpu[-1]:.1f} CPU-s", flush=True)
        result: dict = {"files": n, "workers": args.workers, "repeats": args.repeats,
                        "ours_s": statistics.median(ours_t), "ours_files_per_s": n / statistics.median(ours_t),
                        "ours_cpu_s": statistics.median(ours_cpu),
                        "ours_files_per_cpu_s": n / statistics.median(ours_cpu)}
        rng = np.random.default_rng(0)
        sets = shingle_sets(texts)
        result["ours_pairs"] = int(len(our_edges))
        result["ours_removed"] = int(n - len(np.unique(our_roots)))
        result["ours_precision"] = precision(our_edges, sets, args.sample, rng)
        queries = np.sort(rng.choice(n, min(args.sample, n), replace=False))
        truth = brute_force_pairs(sets, queries)
        result["true_pairs_in_sample"] = len(truth)
        result["ours_recall"] = float(np.mean([our_roots[a] == our_roots[b] for a, b in truth])) if truth else None
        # the same signatures through classic 25 x 10 LSH (datatrove's scheme): what the extra LSH rounds and
        # the verification change
        plain = near_clusters(our_sigs, np.zeros(n, dtype=np.int64), np.arange(n), 25, 10).keeper
        result["ours_plain_lsh_recall"] = float(np.mean([plain[a] == plain[b] for a, b in truth])) if truth else None
        result["ours_plain_lsh_removed"] = int(n - len(np.unique(plain)))
        if dt_t:
            result |= {"datatrove_s": statistics.median(dt_t), "datatrove_files_per_s": n / statistics.median(dt_t),
                       "speedup": statistics.median(dt_t) / statistics.median(ours_t),
                       "datatrove_cpu_s": statistics.median(dt_cpu),
                       "datatrove_files_per_cpu_s": n / statistics.median(dt_cpu),
                       "speedup_cpu": statistics.median(dt_cpu) / statistics.median(ours_cpu),
                       "datatrove_pairs": int(len(dt_pairs)),
                       "datatrove_removed": int(n - len(np.unique(dt_roots))),
                       "datatrove_precision": precision(dt_pairs, sets, args.sample, rng),
                       "datatrove_recall": float(np.mean([dt_roots[a] == dt_roots[b] for a, b in truth]))
                       if truth else None}
        if args.pipeline:
            result |= run_pipeline(tmp, args.max_files, args.workers)
        print(json.dumps(result, indent=2))
        if dt_t:
            print(f"near-dedup files/s: ours {result['ours_files_per_s']:.0f} vs datatrove "
                  f"{result['datatrove_files_per_s']:.0f} -> {result['speedup']:.1f}x wall, "
                  f"{result['speedup_cpu']:.1f}x per CPU-second; recall on "
                  f"{len(truth)} true pairs: ours {result['ours_recall']} vs datatrove {result['datatrove_recall']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_pipeline(tmp: Path, max_files: int, workers: int) -> dict:
    """The whole curate pipeline over stdlib + site-packages repositories (file budget = max_files)."""
    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.demo import demo_repos, site_package_repos, stdlib_repos
    from domainfm.code.curate.pipeline import curate

    repos = demo_repos(False, file_budget=max_files) if max_files else (
        stdlib_repos() + site_package_repos(max_repo_files=1 << 30))
    t0, c0 = time.perf_counter(), cpu_seconds()
    stats = curate(CurateConfig(out=str(tmp / "pipeline"), workers=workers, mbpp="none"), repos)
    el, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"pipeline_repos": len(repos), "pipeline_files_in": stats["files_in"], "pipeline_s": el,
            "pipeline_files_per_s": stats["files_in"] / el, "pipeline_cpu_s": cpu,
            "pipeline_files_per_cpu_s": stats["files_in"] / cpu, "pipeline_files_out": stats["files_out"]}


if __name__ == "__main__":
    main()
