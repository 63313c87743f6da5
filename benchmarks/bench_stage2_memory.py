"""Memory of the one-process global dedup (`pipeline.stage2`) per stage-1 record: the bound behind
`code curate --executor ray --ray-dedup auto` (`pipeline.stage2_memory`).

    .venv/bin/python benchmarks/bench_stage2_memory.py --files 4000 15000 100000000 -o runs/bench_stage2_memory

For each size: a corpus of real files (this venv's distributions as repositories, `bench_executors.make_corpus`;
a size above what exists takes every distribution), `code curate --keep-work` with 2 local workers, then
`stage2` alone in a fresh process: its peak RSS over the process's RSS before the call (imports of the
stage included, which is what a Ray worker that runs it adds), and its wall time. A least-squares line
through the points gives the base and the bytes per record; the script checks that the bound
`stage2_memory(n)` lies above every measured point. Results go to `OUT/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_executors import CURATE_FAST, make_corpus  # noqa: E402

MEASURE = """
import json, resource, sys, time
from pathlib import Path
import pyarrow.parquet as pq
from domainfm.code.curate import pipeline, stages
w = Path(sys.argv[1])
plan = stages.load_plan(w)
n = sum(pq.ParquetFile(w / "s1" / f"kept-{r:05d}.parquet").metadata.num_rows for r in range(len(plan["shards"])))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
pipeline.stage2(str(w))
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"records": n, "added_bytes": peak - base, "process_peak_bytes": peak, "wall_s": round(wall, 3),
                  "bound_bytes": pipeline.stage2_memory(n)}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, nargs="+", default=[4000, 15000])
    ap.add_argument("-o", "--out", default="runs/bench_stage2_memory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_s2mem_", dir=os.environ.get("BENCH_TMP", "/tmp")))
    points = []
    try:
        for n_files in args.files:
            corpus = work / f"corpus_{n_files}"
            info = make_corpus(corpus, n_files)
            run = work / f"run_{n_files}"
            per_shard = str(max(20, info["files"] // 8))
            subprocess.run([sys.executable, "-m", "domainfm", "code", "curate", str(corpus), "-o", str(run),
                            *CURATE_FAST, "--files-per-shard", per_shard, "--workers", "2", "--keep-work"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "DOMAINFM_PROGRESS": "0"})
            r = subprocess.run([sys.executable, "-c", MEASURE, str(run / ".work")], check=True, capture_output=True,
                               text=True)
            point = {"files": info["files"], **json.loads(r.stdout.strip().splitlines()[-1])}
            points.append(point)
            print(point, flush=True)
            shutil.rmtree(corpus)
            shutil.rmtree(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import numpy as np

    x = np.array([p["records"] for p in points], dtype=float)
    y = np.array([p["added_bytes"] for p in points], dtype=float)
    slope, base = np.polyfit(x, y, 1) if len(points) > 1 else (y[0] / x[0], 0.0)
    results = {"points": points, "fit_bytes_per_record": round(float(slope)), "fit_base_bytes": round(float(base)),
               "bound_above_every_point": all(p["bound_bytes"] >= p["added_bytes"] for p in points),
               "load_avg": os.getloadavg()}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "points"}))
    return 0 if results["bound_above_every_point"] else 1


if __name__ == "__main__":
    sys.exit(main())
