"""Curate stage 2 (exact + near dedup) locally vs on Ray Data: time, bytes shuffled, memory, same output.

Corpus: real source files of this machine (the Python standard library and this venv's site-packages,
every file of a known language, UTF-8, <= 1 MB; exact copies kept, as a crawl has them), a seeded
subset of `--files`, laid out as a curate work folder: `--shards` stage-1 shards
(``s1/kept-*.parquet``, the pipeline's schema; repositories = top-level package folders). Then:

* **local**: the MinHash signatures of every shard (stage 1's work, serial here) + `pipeline.stage2`
  (one process: every signature in memory, union-find); time and the peak RSS of that process.
* **ray**: `dedup_ray.stage2_ray` on a local Ray instance with `--cpus` CPUs: signatures recomputed per
  task from the shards' content, then the shuffles; time, bytes each job's partitions received, the
  largest partition, the peak RSS of a Ray worker, rounds; for each `--partitions` value (0 = automatic).
* the two output tables (``dedup_clusters.parquet``, ``decisions.parquet``) are compared byte for byte.

    .venv/bin/python benchmarks/bench_dedup_ray.py --files 20000 --shards 20 --partitions 4 16
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def collect(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(repository, path, text) of up to `n` real source files, seeded sample, duplicates kept."""
    from bench_near_dedup import read_source, source_paths, source_roots

    roots, paths = source_roots(), source_paths()
    idx = np.sort(np.random.default_rng(seed).choice(len(paths), min(len(paths), int(n * 1.2)), replace=False))
    out = []
    for i in idx:
        root, p = paths[i]
        text = read_source(p)
        if text is None:
            continue
        rel = p.relative_to(root)
        repo = ("stdlib" if root == roots[0] else "pypi") + "__" + (rel.parts[0] if len(rel.parts) > 1 else "_")
        out.append((repo, str(rel), text))
        if len(out) == n:
            break
    return out


def write_work(files: list[tuple[str, str, str]], work: Path, shards: int, signatures: bool) -> float:
    """A curate work folder holding `files` as stage-1 output; returns the signature seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.minhash import MinHasher
    from domainfm.code.curate.stages import schemas
    from domainfm.code.curate.swhid import swhid
    from domainfm.core.config import config_to_dict

    out = work.parent
    cfg = CurateConfig(out=str(out))
    repos = {r: i for i, r in enumerate(sorted({f[0] for f in files}))}
    (work / "s1").mkdir(parents=True, exist_ok=True)
    (work / "s2").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(files), shards + 1).astype(int)
    sig_s = 0.0
    rng = np.random.default_rng(1)
    for r in range(shards):
        part = files[bounds[r]:bounds[r + 1]]
        rows = [{"swhid": swhid(t.encode()), "repo_name": repo, "path": path, "language": "Python",
                 "license_type": "permissive" if rng.random() < 0.8 else "no_license", "licenses": [],
                 "content": t, "size": len(t.encode()), "encoding": "utf-8", "commit": None, "kind": "file",
                 "repo_idx": repos[repo], "file_idx": bounds[r] + i} for i, (repo, path, t) in enumerate(part)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schemas()["kept"]), work / "s1" / f"kept-{r:05d}.parquet")
        if signatures:
            t0 = time.perf_counter()
            sigs = MinHasher(cfg.num_perm, cfg.ngram).signatures([x["content"] for x in rows])
            sig_s += time.perf_counter() - t0
            np.save(work / "s1" / f"sig-{r:05d}.npy", sigs)
    plan = {"config": config_to_dict(cfg), "shards": [[] for _ in range(shards)], "out": str(out), "repos": []}
    (work / "plan.json").write_text(json.dumps(plan))
    return sig_s


def _local(work: str) -> tuple[float, int, dict]:
    from domainfm.code.curate.pipeline import stage2

    t0 = time.perf_counter()
    summary = stage2(work)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, summary


def outputs(work: Path) -> dict[str, bytes]:
    return {"dedup_clusters": (work.parent / "dedup_clusters.parquet").read_bytes(),
            "decisions": (work / "s2" / "decisions.parquet").read_bytes()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--partitions", type=int, nargs="+", default=[0])
    ap.add_argument("--shuffle", default="sort_shuffle_pull_based", help="Ray Data shuffle strategy")
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_ray_"))
    try:
        files = collect(args.files)
        nbytes = sum(len(t.encode()) for _, _, t in files)
        print(f"corpus: {len(files)} files, {nbytes / 2**20:.1f} MiB, {args.shards} shards", flush=True)
        local_work = tmp / "local" / ".work"
        sig_s = write_work(files, local_work, args.shards, signatures=True)
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its peak RSS is stage 2's
            local_s, local_rss, summary = pool.apply(_local, (str(local_work),))
        ref = outputs(local_work)
        print(f"local : signatures {sig_s:.1f}s (1 process) + stage2 {local_s:.1f}s; peak RSS {local_rss / 2**20:.0f} MiB;"
              f" {summary}", flush=True)
        figures: dict = {"files": len(files), "bytes": nbytes, "shards": args.shards,
                         "local": {"signature_s": sig_s, "stage2_s": local_s, "peak_rss": local_rss, **summary},
                         "ray": []}
        import ray

        from domainfm.code.curate.dedup_ray import RayDedupOptions, stage2_ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 _temp_dir=str(Path(tempfile.gettempdir()) / f"domainfm-ray-{os.getuid()}"))
        print(f"ray.init {time.perf_counter() - t0:.1f}s ({args.cpus} CPUs)", flush=True)
        for parts in args.partitions:
            work = tmp / f"ray{parts}" / ".work"
            write_work(files, work, args.shards, signatures=False)
            opts = RayDedupOptions(partitions=parts, shuffle=args.shuffle)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            t0 = time.perf_counter()
            stage2_ray(str(work), opts=opts)
            ray_s = time.perf_counter() - t0
            same = outputs(work) == ref
            st = opts.stats
            print(f"ray   : P={st['partitions']} {ray_s:.1f}s (signatures per task included), rounds {st['rounds']}, "
                  f"shuffled {st['bytes_shuffled'] / 2**20:.1f} MiB, largest partition "
                  f"{st['max_partition_bytes'] / 2**20:.2f} MiB, worker peak RSS {st['max_worker_rss'] / 2**20:.0f} MiB,"
                  f" driver peak RSS {max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20:.0f}"
                  f" MiB; output identical to local: {same}", flush=True)
            for j in st["jobs"]:
                print(f"        {j['job']:<16} rows {j.get('rows_in', 0):>10,}  bytes {j.get('bytes_in', 0) / 2**20:8.2f} MiB"
                      f"  largest partition {j.get('max_partition_bytes', 0) / 2**20:7.2f} MiB", flush=True)
            figures["ray"].append({"seconds": ray_s, "identical": same,
                                   **{k: v for k, v in st.items() if k != "jobs"}, "jobs": st["jobs"]})
            if not same:
                print("OUTPUT DIFFERS from the local stage 2", flush=True)
                return 1
        ray.shutdown()
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1, default=int))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
