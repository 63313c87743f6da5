"""Local vs Ray executor on the same inputs, and the per-unit costs of docs/scale.md's cost model.

    .venv/bin/python benchmarks/bench_executors.py --files 3000 --repeats 3 -o runs/bench_executors

1. **curate** a corpus of real files (this venv's installed distributions laid out as repositories by
   `site_packages_repos.py`, whole distributions taken in name order until `--files`): the local executor
   with 2 worker processes vs the ray executor with 2 CPUs, (a) a local Ray instance started by the
   command (startup included) and (b) a running 2-CPU instance joined with `--ray-address` (what a real
   cluster is, with `--join`), (c) the local instance with the global dedup forced onto Ray Data
   shuffles (`--ray-dedup data`; (a) and (b) use `auto`, one Ray task while the corpus fits its
   measured memory bound). Interleaved repeats, each a fresh `domainfm` process; the median wall time and Ray's
   overhead = ray / local - 1. Outputs are checked identical (sha256 of every file). Then the start +
   stop of a local 2-CPU Ray instance alone (`ray_start_stop`): the fixed part of variant (a).
2. **per-file costs** from one `--workers 1` local run with `--keep-work`: CPU-seconds per file (user +
   system of the command process), bytes read, bytes written per stage (s1 = what the cluster's shared
   storage carries from the per-shard stage to the global dedup stage and back: the "shuffle"), peak RSS.
3. **per-slide costs** on the real slides of `$DOMAINFM_DATA/pathology/slides` (tile, then extract with a
   random-init resnet18 at 224 px on the CPU): CPU-seconds, tiles, bytes written, peak RSS per slide
   (one process per slide), and tile local vs ray on 2 CPUs.

Every command runs as a child process; CPU time and peak RSS come from `os.wait4` (the child and the
worker processes it waited for). Results go to `OUT/results.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the TCGA fixture's metadata has no resolution: 0.5 um/px assumed (used only when a slide records none)
MPP = ["--slide-mpp", "0.5"]
CURATE_FAST = ["--no-humaneval", "--mbpp", "none", "--decontam-benchmarks", "none"]


def run(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `domainfm ARGS` in a child process: wall s, CPU s (child + its reaped workers), peak RSS MB."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "domainfm", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "DOMAINFM_PROGRESS": "0", **(env or {})})
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"domainfm {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    # ru: the child and the worker processes it reaped (local executor); Ray workers are not counted
    cpu = ru.ru_utime + ru.ru_stime
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


RUN_KEYS = (b"out:", b"output:", b"workers:", b"executor:", b"ray_address:", b"ray_dedup")


def tree(root: Path, skip: tuple[str, ...] = (".work",)) -> dict[str, str]:
    """sha256 per output file; stats.json and summary.csv (paths, seconds) left out, config.yaml without
    the keys that name the run (folder, executor, workers)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in skip and p.name not in ("stats.json", "summary.csv"):
            data = p.read_bytes()
            if p.name == "config.yaml":
                data = b"".join(x for x in data.splitlines(True) if not x.startswith(RUN_KEYS))
            out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


def size(root: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def make_corpus(dest: Path, n_files: int) -> dict[str, Any]:
    every = dest.parent / "all_repos"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "site_packages_repos.py"), str(every)], check=True,
                   stdout=subprocess.DEVNULL)
    dest.mkdir(parents=True)
    files = nbytes = 0
    for repo in sorted(every.iterdir()):
        if files >= n_files:
            break
        found = [p for p in repo.rglob("*") if p.is_file()]
        if not found:
            continue
        files += len(found)
        nbytes += sum(p.stat().st_size for p in found)
        repo.rename(dest / repo.name)
    shutil.rmtree(every)
    return {"files": files, "bytes": nbytes, "repos": len(list(dest.iterdir()))}


HOLD = """
import os, sys, logging
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray
ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level=logging.ERROR,
         log_to_driver=False, _temp_dir=sys.argv[2], object_store_memory=2**28,
         _system_config={"worker_niceness": 0})  # as domainfm's own local instance (scale/ray_pool.py)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # held until the benchmark closes our stdin
ray.shutdown()
"""


HOLDER: subprocess.Popen | None = None

START_STOP = """
import json, logging, os, sys, time
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray
t0 = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
         _temp_dir=sys.argv[1], object_store_memory=2**28, _system_config={"worker_niceness": 0})
t1 = time.perf_counter()
ray.shutdown()
print(json.dumps({"init_s": round(t1 - t0, 3), "shutdown_s": round(time.perf_counter() - t1, 3)}))
"""


def ray_start_stop(tmp: Path, repeats: int) -> dict[str, float]:
    """Seconds of `ray.init` and `ray.shutdown` of a local 2-CPU instance as `RayPool` starts it (the
    fixed cost a command without --ray-address pays), median of `repeats` fresh processes."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", START_STOP, str(tmp)], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in ("init_s", "shutdown_s")}


def start_cluster(tmp: Path, cpus: int) -> tuple[str, subprocess.Popen]:
    """A running `cpus`-CPU Ray instance in a helper process (stopped by closing its stdin; `ray stop`
    would stop every Ray instance of the machine); its address, for `--ray-address`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(cpus), str(tmp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip() if proc.stdout else ""
    if not address:
        raise SystemExit("could not start the Ray instance")
    return address, proc


def stop_cluster(proc: subprocess.Popen, tmp: Path) -> None:
    if proc.stdin:
        proc.stdin.close()
    proc.wait(timeout=120)
    shutil.rmtree(tmp, ignore_errors=True)


def bench_curate(work: Path, corpus: Path, repeats: int, address: str) -> dict[str, Any]:
    variants = {
        "local_2_workers": ["--workers", "2"],
        "ray_local_instance_2_cpus": ["--executor", "ray", "--workers", "2"],
        # the global dedup forced onto Ray Data shuffles (what --ray-dedup auto picks past its memory bound)
        "ray_data_dedup_2_cpus": ["--executor", "ray", "--workers", "2", "--ray-dedup", "data"],
    }
    if address:
        variants["ray_joined_cluster_2_cpus"] = ["--executor", "ray", "--ray-address", address]
    times: dict[str, list[float]] = {k: [] for k in variants}
    spans: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    hashes: dict[str, dict[str, str]] = {}
    for rep in range(repeats):
        for name, extra in variants.items():  # interleaved, so that load changes hit every variant alike
            out = work / f"curate_{name}_{rep}"
            if HOLDER is not None and HOLDER.poll() is not None:
                raise SystemExit(f"the benchmark's Ray instance exited ({HOLDER.returncode})")
            r = run(["code", "curate", str(corpus), "-o", str(out), *CURATE_FAST, *extra])
            times[name].append(r["wall_s"])
            spans[name].append(stage_spans(out))
            hashes.setdefault(name, tree(out))
            shutil.rmtree(out)
            print(f"  curate {name} #{rep}: {r['wall_s']:.1f}s {spans[name][-1]}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["local_2_workers"]
    ref = hashes["local_2_workers"]
    stage_med = {k: {st: statistics.median(x[st] for x in v) for st in v[0]} for k, v in spans.items()}
    sharded = {k: v["start_to_s1"] + v["s3"] for k, v in stage_med.items()}
    return {"wall_s": times, "median_s": med,
            "overhead_pct": {k: round(100 * (v / base - 1), 1) for k, v in med.items() if k != "local_2_workers"},
            "stage_spans_s": spans, "stage_median_s": stage_med,
            # the sharded stages (s1 incl. the executor's start, s3): what the executor contract runs
            "sharded_stages_overhead_pct": {k: round(100 * (v / sharded["local_2_workers"] - 1), 1)
                                            for k, v in sharded.items() if k != "local_2_workers"},
            "outputs_identical": {k: h == ref for k, h in hashes.items()}, "n_output_files": len(ref)}


def stage_spans(out: Path) -> dict[str, float]:
    """Seconds per curate stage from the completion markers' times: plan -> last s1 marker (the executor's
    start included), -> s2 marker (global dedup), -> last s3 marker."""
    w = out / ".work"
    t = {st: max(p.stat().st_mtime for p in (w / st / "completions").glob("*.json")) for st in ("s1", "s2", "s3")}
    t0 = (w / "plan.json").stat().st_mtime
    return {"start_to_s1": round(t["s1"] - t0, 2), "s2": round(t["s2"] - t["s1"], 2),
            "s3": round(t["s3"] - t["s2"], 2)}


def curate_unit_costs(work: Path, corpus: Path, info: dict[str, Any]) -> dict[str, Any]:
    out = work / "curate_costs"
    r = run(["code", "curate", str(corpus), "-o", str(out), *CURATE_FAST, "--keep-work"])
    stats = json.loads((out / "stats.json").read_text())
    s1 = size(out / ".work" / "s1", "*.parquet") + size(out / ".work" / "s1", "*.npy")
    s2 = size(out / ".work" / "s2", "*.parquet")
    final = size(out, "data/*.parquet") + size(out, "removed/*.parquet") + size(out, "*.parquet")
    n = info["files"]
    res = {**r, "files": n, "input_bytes": info["bytes"], "shards": stats["shards"],
           "cpu_s_per_file": r["cpu_s"] / n, "s1_bytes": s1, "s1_bytes_per_file": s1 / n,
           "s2_decisions_bytes": s2, "output_bytes": final, "output_bytes_per_file": final / n,
           "files_out": stats["files_out"], "command": "domainfm code curate CORPUS -o OUT " + " ".join(
               CURATE_FAST) + " --keep-work"}
    shutil.rmtree(out)
    return res


def bench_slides(work: Path, slides: list[Path], address: str, repeats: int) -> dict[str, Any]:
    per_slide = []
    for s in slides:
        t_out, f_out = work / f"tile_{s.stem}", work / f"feat_{s.stem}"
        t = run(["pathology", "tile", str(s), "-o", str(t_out), *MPP])
        rows = (t_out / "summary.csv").read_text().splitlines()
        n_tiles = int(rows[1].split(",")[2])
        f = run(["pathology", "extract", "--encoder", "resnet18", "--tiles", str(t_out), "-o", str(f_out),
                 "--device", "cpu", "--workers", "1", "--batch-size", "64"])
        per_slide.append({"slide": s.name, "slide_bytes": s.stat().st_size, "tiles": n_tiles,
                          "tile": {**t, "bytes_written": size(t_out)},
                          "extract_resnet18_224": {**f, "bytes_written": size(f_out)}})
        print(f"  {s.name}: {n_tiles} tiles, tile {t['cpu_s']:.1f} cpu-s, extract {f['cpu_s']:.1f} cpu-s",
              flush=True)
    ray_name = "ray_joined_cluster_2_cpus" if address else "ray_local_instance_2_cpus"
    variants = {"local_2_workers": ["--workers", "2"], ray_name: (
        ["--executor", "ray", "--ray-address", address] if address else ["--executor", "ray", "--workers", "2"])}
    times: dict[str, list[float]] = {k: [] for k in variants}
    hashes = {}
    for rep in range(repeats):
        for name, extra in variants.items():
            out = work / f"tile_all_{name}_{rep}"
            r = run(["pathology", "tile", *map(str, slides), "-o", str(out), *MPP, *extra])
            times[name].append(r["wall_s"])
            hashes.setdefault(name, tree(out))
            shutil.rmtree(out)
            print(f"  tile {name} #{rep}: {r['wall_s']:.1f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"per_slide": per_slide, "tile_batch": {
        "wall_s": times, "median_s": med,
        "overhead_pct": round(100 * (med[ray_name] / med["local_2_workers"] - 1), 1),
        "outputs_identical": hashes[ray_name] == hashes["local_2_workers"]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default="runs/bench_executors")
    ap.add_argument("--files", type=int, default=3000, help="about this many real files in the corpus")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slide-repeats", type=int, default=2)
    ap.add_argument("--skip-slides", action="store_true")
    ap.add_argument("--join", action="store_true", help="also time joining a running instance (--ray-address)")
    args = ap.parse_args(argv)
    data = os.environ.get("DOMAINFM_DATA")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # on the venv's file system (the corpus is hard links), outside the repository
    work = Path(tempfile.mkdtemp(prefix="bench_exec_", dir=os.environ.get("BENCH_TMP", "/tmp")))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb_", dir="/tmp"))  # short: Ray's socket paths
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
                               "note": "shared machine: absolute times are depressed; ratios are side by side"}
    holder = None
    try:
        corpus = work / "corpus"
        results["corpus"] = make_corpus(corpus, args.files)
        # about 8 shards, so that 2 workers have shards to share (the default 2,000 files would be one)
        CURATE_FAST.extend(["--files-per-shard", str(max(20, results["corpus"]["files"] // 8))])
        print(f"corpus: {results['corpus']}", flush=True)
        address = ""
        if args.join:
            address, holder = start_cluster(ray_tmp, 2)
            global HOLDER
            HOLDER = holder
        results["curate"] = bench_curate(work, corpus, args.repeats, address)
        results["ray_start_stop"] = ray_start_stop(ray_tmp, args.repeats)
        print(f"ray start/stop: {results['ray_start_stop']}", flush=True)
        results["curate_per_file"] = curate_unit_costs(work, corpus, results["corpus"])
        if not args.skip_slides and data:
            slides = sorted((Path(data) / "pathology" / "slides").glob("*.svs"))
            results["slides"] = bench_slides(work, slides, address, args.slide_repeats)
    except SystemExit as exc:
        results["error"] = str(exc)[-2000:]
        print(results["error"], flush=True)
    finally:
        if holder is not None:
            stop_cluster(holder, ray_tmp)
        shutil.rmtree(work, ignore_errors=True)
    results["load_avg_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results.get(k) for k in ("corpus", "curate", "ray_start_stop", "curate_per_file")}, indent=1))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
