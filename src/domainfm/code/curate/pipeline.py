"""`curate(cfg)`: plan -> s1 shards -> s2 global dedup -> s3 shards -> stats, all resumable.

Every stage writes its outputs atomically and then a completion marker; a rerun of the same command
(after kill -9 at any moment) skips what is finished and ends with the same output as an
uninterrupted run. The plan (repositories, shard assignment, config fingerprint) is fixed on the first
run and does not depend on `--workers`, so the output does not either.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

from domainfm.code.curate import readers, stages
from domainfm.code.curate.config import CurateConfig
from domainfm.code.curate.sources import derived_records
from domainfm.core.errors import UserError, WorkerLost
from domainfm.core.executor import ShardedExecutor, WorkerPool, get_pool, pool_options
from domainfm.core.io import atomic_write_json, write_parquet
from domainfm.core.progress import get_logger
from domainfm.core.steps import PipelineStats

log = get_logger("curate")
STEP_ORDER = ["read", "sources", "language", "license", "quality", "exact_dedup", "near_dedup", "pii", "decontaminate"]


def make_plan(cfg: CurateConfig, repos: list[readers.RepoSpec]) -> dict[str, Any]:
    """Split repositories into shards of about `files_per_shard` files (big dir repos into parts)."""
    units: list[tuple[list[int], int]] = []
    for i, spec in enumerate(repos):
        if spec.kind == "dir":
            n = len(readers.list_dir(spec))
            parts = max(1, math.ceil(n / cfg.files_per_shard))
            units += [([i, p, parts], math.ceil(n / parts)) for p in range(parts)]
        else:
            size = Path(spec.path).stat().st_size if spec.kind == "archive" else cfg.files_per_shard * 4096
            units.append(([i, 0, 1], max(1, size // 4096)))
    shards: list[list[list[int]]] = [[]]
    load = 0
    for unit, weight in units:
        if shards[-1] and load + weight > cfg.files_per_shard:
            shards.append([])
            load = 0
        shards[-1].append(unit)
        load += weight
    return {"repos": [r.to_dict() for r in repos], "shards": shards}


def _prepare(cfg: CurateConfig, repos: list[readers.RepoSpec] | None) -> tuple[Path, dict[str, Any]]:
    if not cfg.out:
        raise UserError("an output folder is required (-o OUT)")
    if repos is None:
        if not cfg.sources:
            raise UserError("give at least one SRC (directory, repository or archive)")
        repos = readers.plan_sources(cfg.sources, cfg.layout)
    out = Path(cfg.out).absolute()
    work = out / ".work"
    ident = {"config": cfg.fingerprint_dict(), "repos": [r.to_dict() for r in repos]}
    fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    plan_path = work / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        if plan.get("fingerprint") != fingerprint:
            raise UserError(f"{out} holds a run with other inputs or options; use a new -o or delete it")
        return work, plan
    if out.exists() and any(p.name != ".work" for p in out.iterdir()):
        raise UserError(f"{out} exists and is not a curation run folder; choose a new -o")
    plan = make_plan(cfg, repos)
    plan.update(fingerprint=fingerprint, out=str(out), config={**cfg.fingerprint_dict(), "out": str(out)})
    atomic_write_json(plan_path, plan)
    return work, plan


def stage2(work: str, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Global exact + near dedup over every s1 shard; writes the decisions and the cluster table.

    Records are deduplicated within their kind (files, notebook scripts, structured notebooks, issues,
    PRs), as The Stack v2 deduplicated each source on its own: a notebook's two forms share its swhid and
    much of their text, and must not remove each other."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from domainfm.code.curate.dedup import estimated_jaccard, exact_groups, near_clusters

    wd = Path(work)
    plan = stages.load_plan(wd)
    cfg = CurateConfig(**plan["config"])
    n_shards = len(plan["shards"])
    cols = ["swhid", "repo_name", "path", "license_type", "repo_idx", "file_idx", "kind"]
    tables = [pq.read_table(wd / "s1" / f"kept-{r:05d}.parquet", columns=cols) for r in range(n_shards)]
    shard = np.concatenate([np.full(t.num_rows, r, dtype=np.int64) for r, t in enumerate(tables)])
    row = np.concatenate([np.arange(t.num_rows, dtype=np.int64) for t in tables])
    t = pa.concat_tables(tables)
    kinds = np.array([k or "file" for k in t.column("kind").to_pylist()], dtype=object)
    swh = np.array(t.column("swhid").to_pylist(), dtype=object)
    repo, path = t.column("repo_name").to_pylist(), t.column("path").to_pylist()
    priority = (np.array(t.column("license_type").to_pylist(), dtype=object) != "permissive").astype(np.int64)
    order = np.array(t.column("repo_idx").to_pylist(), dtype=np.int64) * (1 << 32) + np.array(
        t.column("file_idx").to_pylist(), dtype=np.int64)
    decisions: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []

    def record(step: str, reason: str, dup: int, keep: int, est: float | None) -> None:
        decisions.append({"shard": int(shard[dup]), "row": int(row[dup]), "step": step, "reason": reason,
                          "detail": f"kept {swh[keep]} {repo[keep]}/{path[keep]}"})
        clusters.append({"kind": step.split("_")[0], "cluster": swh[keep], "kept_swhid": swh[keep],
                         "kept_repo": repo[keep], "kept_path": path[keep], "dup_swhid": swh[dup],
                         "dup_repo": repo[dup], "dup_path": path[dup], "est_jaccard": est})

    # keeper[i] = global index of the record i is a duplicate of (itself when kept), within its kind
    keeper = np.arange(len(swh), dtype=np.int64)
    for kind in sorted(set(kinds)):
        sel = np.flatnonzero(kinds == kind)
        keeper[sel] = sel[exact_groups(swh[sel].astype(str), priority[sel], order[sel])]
    for i in np.flatnonzero(keeper != np.arange(len(keeper))):
        record("exact_dedup", "exact_duplicate", int(i), int(keeper[i]), 1.0)
    n_near = 0
    if cfg.near_dedup and len(swh):
        sigs = np.concatenate([np.load(wd / "s1" / f"sig-{r:05d}.npy") for r in range(n_shards)])
        # exact survivors with at least one shingle (an all-max signature means no tokens)
        alive = (keeper == np.arange(len(keeper))) & (sigs != 0xFFFFFFFF).any(axis=1)
        for kind in sorted(set(kinds)):
            idx = np.flatnonzero(alive & (kinds == kind))
            if not len(idx):
                continue
            res = near_clusters(sigs[idx], priority[idx], order[idx], cfg.bands, cfg.rows, cfg.lsh_rounds,
                                cfg.verify_jaccard)
            n_near += res.n_clusters
            dups = np.flatnonzero(res.keeper != np.arange(len(idx)))
            est = estimated_jaccard(sigs, idx[dups], idx[res.keeper[dups]]) if len(dups) else []
            for k, d in enumerate(dups):
                record("near_dedup", "near_duplicate", int(idx[d]), int(idx[res.keeper[d]]), float(est[k]))
    ds = pa.schema([("shard", pa.int64()), ("row", pa.int64()), ("step", pa.string()), ("reason", pa.string()),
                    ("detail", pa.string())])
    cs = pa.schema([("kind", pa.string()), ("cluster", pa.string()), ("kept_swhid", pa.string()),
                    ("kept_repo", pa.string()), ("kept_path", pa.string()), ("dup_swhid", pa.string()),
                    ("dup_repo", pa.string()), ("dup_path", pa.string()), ("est_jaccard", pa.float64())])
    write_parquet(Path(plan["out"]) / "dedup_clusters.parquet", clusters, schema=cs)
    write_parquet(wd / "s2" / "decisions.parquet", decisions, schema=ds)
    stages.kill_point("s2")
    n_exact = len({c["cluster"] for c in clusters if c["kind"] == "exact"})
    return {"files": int(len(swh)), "exact_clusters": n_exact, "near_clusters": n_near}


def _run_stage(fn: Any, name: str, work: Path, n: int, pool: WorkerPool, memory: int = 0) -> list[dict[str, Any]]:
    return ShardedExecutor(functools.partial(fn, str(work)), n, work / name, name=name, executor=pool,
                           task_memory=memory).run()


def finalize(work: Path, plan: dict[str, Any], s1: list[dict], s2: dict, s3: list[dict]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    out = Path(plan["out"])
    stats = PipelineStats()
    for summary in s1 + s3:
        stats.merge(PipelineStats.from_dict(summary["stats"]))
    steps = [stats.steps[n] for n in STEP_ORDER if n in stats.steps]
    read = stats.step("read")
    languages: dict[str, dict[str, int]] = {}
    for summary in s3:
        for lang, (files, nbytes) in summary["languages"].items():
            c = languages.setdefault(lang, {"files": 0, "bytes": 0})
            c["files"] += files
            c["bytes"] += nbytes
    kinds: dict[str, dict[str, int]] = {}
    for summary in s3:
        for kind, (files, nbytes) in summary.get("kinds", {}).items():
            c = kinds.setdefault(kind, {"files": 0, "bytes": 0})
            c["files"] += files
            c["bytes"] += nbytes
    sources: dict[str, int] = {}
    for summary in s1:
        for k, v in summary.get("sources", {}).items():
            sources[k] = sources.get(k, 0) + v
    derived = derived_records(stats.steps["sources"].to_dict()) if "sources" in stats.steps else 0
    pii: dict[str, int] = {}
    for summary in s3:
        for k, v in summary["pii"].items():
            pii[k] = pii.get(k, 0) + v
    decontamination: dict[str, int] = {}
    for summary in s3:
        for k, v in summary.get("decontamination", {}).items():
            decontamination[k] = decontamination.get(k, 0) + v
    last = steps[-1]
    result = {
        "files_in": read.n_in, "files_out": last.n_out, "bytes_in": read.bytes_in, "bytes_out": last.bytes_out,
        # records made beyond one per input (a notebook's second form); files_in + derived = out + dropped
        "derived_records": derived,
        "dropped": dict(sorted(stats.dropped().items())),
        "dropped_by_step": {st.name: dict(sorted(st.dropped.items())) for st in steps},
        "funnel": [{"step": "input", "files": read.n_in, "bytes": read.bytes_in}]
        + [{"step": st.name, "files": st.n_out, "bytes": st.bytes_out} for st in steps],
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1]["files"], kv[0]))),
        "kinds": dict(sorted(kinds.items())), "sources": dict(sorted(sources.items())),
        "repos": len(plan["repos"]), "shards": len(plan["shards"]),
        "empty_repos": sorted({r for s in s1 for r in s["empty_repos"]}),
        "dedup": s2, "pii": dict(sorted(pii.items())),
        "decontamination": dict(sorted(decontamination.items())), "config": plan["config"],
    }
    assert result["files_in"] + derived == result["files_out"] + sum(result["dropped"].values()), "files lost"
    tables = [pq.read_table(work / "s3" / f"pii-{r:05d}.parquet") for r in range(len(plan["shards"]))]
    import pyarrow as pa

    with_rows = pa.concat_tables(tables)
    from domainfm.core.io import atomic_path

    with atomic_path(out / "pii.parquet") as tmp:
        pq.write_table(with_rows, tmp, compression="zstd")
    stages.kill_point("final")
    atomic_write_json(out / "stats.json", result)
    return result


# Memory the one-process global dedup (`stage2`) adds to its process: 59 MiB + 9.47 KB per stage-1 record
# (9.98 KB in an earlier run), least squares through 3,110 / 12,526 / 23,874 records of real files
# (benchmarks/bench_stage2_memory.py); the bound has 1.6x headroom per record (longer paths, other corpora).
STAGE2_BASE_BYTES = 128 << 20
STAGE2_BYTES_PER_RECORD = 16 << 10
GLOBAL_DEDUP_MODES = ("auto", "task", "data")


def stage2_memory(n_records: int) -> int:
    """Bytes the one-process global dedup needs for `n_records` stage-1 records (a measured bound)."""
    return STAGE2_BASE_BYTES + n_records * STAGE2_BYTES_PER_RECORD


def global_dedup_mode(cfg: CurateConfig, work: Path, plan: dict[str, Any]) -> tuple[str, int]:
    """Where stage 2 runs, and the memory its one task reserves: ``local`` (this process, the local
    executor), ``task`` (`stage2` as one task of the Ray pool: the local algorithm on one worker, which
    reserves its measured bound `stage2_memory`) or ``data`` (`dedup_ray.stage2_ray`: Ray Data shuffles,
    no process holds the corpus). ``--ray-dedup auto`` takes ``task`` while the bound fits
    ``--ray-dedup-task-mb``, as Spark broadcasts a join side that fits: the ~15 shuffle jobs cost seconds
    of fixed scheduling that only a corpus too large for one worker repays (docs/scale.md). Both give the
    local output, byte for byte."""
    if cfg.executor != "ray":
        return "local", 0
    if (work / "s2" / "completions" / "00000.json").exists():
        return "task", 0  # done already (a resumed run; the s1 files may be gone): nothing runs
    mode, why, need = cfg.ray_dedup, f"--ray-dedup {cfg.ray_dedup}", 0
    if mode in ("auto", "task"):
        import pyarrow.parquet as pq

        n = sum(pq.ParquetFile(work / "s1" / f"kept-{r:05d}.parquet").metadata.num_rows
                for r in range(len(plan["shards"])))
        need = stage2_memory(n)
        if mode == "auto":
            mode = "task" if need <= cfg.ray_dedup_task_mb << 20 else "data"
            why = f"{n} records need about {need >> 20} MiB in one task, limit {cfg.ray_dedup_task_mb} MiB"
    log.info("global dedup: %s (%s)", "one Ray task" if mode == "task" else "Ray Data shuffles", why)
    return mode, need if mode == "task" else 0


def curate(cfg: CurateConfig, repos: list[readers.RepoSpec] | None = None) -> dict[str, Any]:
    """Run (or resume) a curation into `cfg.out`; returns the stats. `repos` overrides `cfg.sources`."""
    pool = get_pool(cfg.executor, cfg.workers, **pool_options(cfg.executor, cfg.ray_address))  # checks the name
    if cfg.ray_dedup not in GLOBAL_DEDUP_MODES:  # before the long stage 1
        raise UserError(f"--ray-dedup {cfg.ray_dedup!r}: choose one of {', '.join(GLOBAL_DEDUP_MODES)}")
    work, plan = _prepare(cfg, repos)
    n = len(plan["shards"])
    log.info("curating %d repositories in %d shards with %d %s workers", len(plan["repos"]), n, cfg.workers,
             cfg.executor)
    # one pool for the three stages (a Ray instance starts once); s2 is one task (in-process when local)
    with pool:
        s1 = _run_stage(stages.stage1, "s1", work, n, pool)
        mode, memory = global_dedup_mode(cfg, work, plan)
        s2 = None
        if mode != "data":
            try:
                s2 = _run_stage(stage2, "s2", work, 1, pool, memory)[0]
            except WorkerLost as exc:
                if cfg.executor != "ray" or cfg.ray_dedup != "auto":
                    raise
                # the bound was wrong for this corpus (or the node was lost): the path that holds no corpus
                log.warning("global dedup: the one task's worker died (%s); running it as Ray Data shuffles",
                            type(exc.__cause__).__name__)
        if s2 is None:  # Ray Data jobs started from this process
            from domainfm.code.curate.dedup_ray import stage2_ray

            s2 = _run_stage(functools.partial(stage2_ray, address=cfg.ray_address), "s2", work, 1,
                            get_pool("local"))[0]
        s3 = _run_stage(stages.stage3, "s3", work, n, pool)
    result = finalize(work, plan, s1, s2, s3)
    if not cfg.keep_work:
        for p in sorted((work / "s1").glob("*-*.parquet")) + sorted((work / "s1").glob("sig-*.npy")):
            p.unlink(missing_ok=True)
    return result


def funnel_table(stats: dict[str, Any]) -> str:
    """Files and bytes after each step, with what each step dropped."""
    lines = [f"{'step':<14}{'files':>10}{'bytes':>16}  dropped"]
    by_step = stats["dropped_by_step"]
    for row in stats["funnel"]:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(by_step.get(row["step"], {}).items(), key=lambda kv: -kv[1]))
        lines.append(f"{row['step']:<14}{row['files']:>10,}{row['bytes']:>16,}  {drops}")
    return "\n".join(lines)


def remove_run(out: str | Path) -> None:
    """Delete a curation output folder (only if it looks like one)."""
    p = Path(out)
    if (p / ".work" / "plan.json").exists():
        shutil.rmtree(p)
