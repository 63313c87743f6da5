"""Attribution benchmark: `code index` / `code trace` vs what a user does without us (ripgrep, SQLite FTS5).

Corpus: real packages installed in this venv (each package folder one repository), curated with
`domainfm code curate` (or `--corpus` to reuse a curated folder). The same kept files are written out
as plain files for ripgrep and loaded into an SQLite FTS5 table (default unicode61 tokenizer) for the
peers. Reported:

- index build: Parquet MB/s and the peak resident memory of the `domainfm code index` process;
- 1,000 queries (`--queries`): half are excerpts (3-12 lines) of corpus files, half excerpts of real
  files that are not in the corpus (the Python standard library). Latency p50/p99 of
    membership  ours: n-gram lookup in the Bloom filters (index loaded once);
                ripgrep: `rg -F -l` for the excerpt's longest line over the corpus files (one process
                per query, as a user runs it);
    top-5       ours: `Tracer.search` (BM25 per shard + verbatim re-rank: the ranked files);
                FTS5: `MATCH` of the excerpt's terms OR-ed, `ORDER BY rank LIMIT 5`;
    full trace  ours: `Tracer.trace` (membership + top-5 + the matching lines of each hit);
- hit@5: for `--renamed` corpus files, an excerpt with identifiers renamed (snake_case -> camelCase,
  a few names replaced) and re-indented; is the original file in the top 5 of each?

    .venv/bin/python benchmarks/bench_trace.py --packages sympy,jinja2,click,yaml,fsspec --queries 1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

from domainfm.code.attribution.membership import membership
from domainfm.code.attribution.trace import Tracer

SITE = Path(sysconfig.get_paths()["purelib"])
STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
FTS_TOKEN = re.compile(r"[A-Za-z0-9]+")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))  # milliseconds


def curate(packages: list[str], work: Path) -> Path:
    src = work / "src"
    for name in packages:
        path = SITE / name
        if not path.is_dir():
            sys.exit(f"bench_trace: no package folder {path}")
        dest = src / f"pypi__{name}"
        if not dest.exists():
            shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
        for dist in SITE.glob(f"{name}*.dist-info"):  # the package's license metadata
            shutil.copytree(dist, dest / dist.name, dirs_exist_ok=True)
    out = work / "corpus"
    if not (out / "stats.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "domainfm", "code", "curate", str(src), "-o", str(out),
                        "--workers", "2"], check=True, env={**os.environ, "DOMAINFM_PROGRESS": "0"})
    return out


def corpus_rows(corpus: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for shard in sorted((corpus / "data").glob("*.parquet")):
        rows += pq.read_table(shard, columns=["swhid", "repo_name", "path", "content"]).to_pylist()
    return rows


def build_index(corpus: Path, index: Path) -> dict:
    shutil.rmtree(index, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "domainfm", "code", "index", str(corpus), "-o", str(index)],
                            env={**os.environ, "DOMAINFM_PROGRESS": "0"}, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        sys.exit("bench_trace: code index failed")
    mb = sum(p.stat().st_size for p in (corpus / "data").glob("*.parquet")) / 1e6
    return {"seconds": round(seconds, 2), "parquet_mb": round(mb, 1), "mb_per_s": round(mb / seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": proc.stdout.read().strip()}


def excerpt(text: str, rng: np.random.Generator) -> str | None:
    lines = [ln for ln in text.splitlines()]
    if len(lines) < 12:
        return None
    n = int(rng.integers(3, 13))
    start = int(rng.integers(0, len(lines) - n + 1))
    piece = "\n".join(lines[start:start + n])
    return piece if len(piece.strip()) >= 60 else None


def rename_and_reindent(text: str) -> str:
    def camel(m: re.Match) -> str:
        head, *rest = m.group(0).split("_")
        return head + "".join(p.capitalize() for p in rest)

    text = re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", camel, text)
    for old, new in (("self", "this"), ("name", "nm"), ("value", "val"), ("result", "res")):
        text = re.sub(rf"\b{old}\b", new, text)
    return re.sub(r"^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), text, flags=re.M)


def fts_query(text: str, limit: int = 256) -> str:
    terms: dict[str, int] = {}
    for t in FTS_TOKEN.findall(text):
        terms[t.lower()] = terms.get(t.lower(), 0) + 1
    top = sorted(terms, key=lambda t: -terms[t])[:limit]
    return " OR ".join(f'"{t}"' for t in top)


def fts5_top5(db: sqlite3.Connection, text: str) -> list[str]:
    """FTS5's top 5 for the text's terms OR-ed (no ASCII term at all: no query, no hit)."""
    query = fts_query(text)
    if not query:
        return []
    return [row[0] for row in db.execute("SELECT swhid FROM docs WHERE docs MATCH ? ORDER BY rank LIMIT 5",
                                         (query,)).fetchall()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", default="sympy,jinja2,click,yaml,fsspec,attr,anyio,dateutil",
                    help="site-packages folders to curate as the corpus")
    ap.add_argument("--corpus", type=Path, help="reuse this curated corpus instead")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_trace"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--renamed", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or curate(args.packages.split(","), args.work)
    rows = corpus_rows(corpus)
    print(f"corpus: {corpus} ({len(rows):,} files, {sum(len(r['content']) for r in rows) / 1e6:.1f} M chars)")

    build = build_index(corpus, args.work / "index")
    print(f"index build: {build['parquet_mb']} MB of Parquet in {build['seconds']} s = {build['mb_per_s']} MB/s, "
          f"peak RSS {build['peak_rss_mb']} MB")

    # the peers' copies of the same kept files
    files_dir = args.work / "files"
    shutil.rmtree(files_dir, ignore_errors=True)
    db_path = args.work / "fts5.db"
    db_path.unlink(missing_ok=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(swhid UNINDEXED, content)")
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        p = files_dir / f"{i:06d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(r["content"])
    db.executemany("INSERT INTO docs VALUES (?, ?)", ((r["swhid"], r["content"]) for r in rows))
    db.commit()
    fts_build = time.perf_counter() - t0
    print(f"peers: files written + FTS5 table built in {fts_build:.1f} s")

    outside = sorted(p for p in STDLIB.glob("*.py"))
    queries: list[tuple[str, bool]] = []
    while len(queries) < args.queries:
        inside = len(queries) % 2 == 0
        text = rows[int(rng.integers(len(rows)))]["content"] if inside else \
            outside[int(rng.integers(len(outside)))].read_text(errors="replace")
        piece = excerpt(text, rng)
        if piece:
            queries.append((piece, inside))

    tracer = Tracer(args.work / "index")
    filters = [s.bloom for s in tracer.shards]
    t_mem, t_top, t_trace, t_rg, t_fts = [], [], [], [], []
    verdict_in, verdict_out = [], []
    for q, inside in queries:
        t = time.perf_counter()
        m = membership(q, filters, tracer.width, tracer.stride)
        t_mem.append(time.perf_counter() - t)
        (verdict_in if inside else verdict_out).append(m.fraction)
        t = time.perf_counter()
        tracer.search(q, top_k=5)
        t_top.append(time.perf_counter() - t)
        t = time.perf_counter()
        tracer.trace(q, top_k=5)
        t_trace.append(time.perf_counter() - t)
        line = max(q.splitlines(), key=len)
        t = time.perf_counter()
        subprocess.run(["rg", "-F", "-l", "--no-messages", "-e", line, str(files_dir)], capture_output=True)
        t_rg.append(time.perf_counter() - t)
        t = time.perf_counter()
        fts5_top5(db, q)
        t_fts.append(time.perf_counter() - t)

    hits_ours = hits_fts = n_renamed = 0
    for r in (rows[int(i)] for i in rng.permutation(len(rows))):
        if n_renamed >= args.renamed:
            break
        piece = excerpt(rename_and_reindent(r["content"]), rng)
        if not piece or len(piece) < 200:
            continue
        n_renamed += 1
        hits_ours += r["swhid"] in [h["swhid"] for h in tracer.trace(piece, top_k=5)["hits"]]
        hits_fts += r["swhid"] in fts5_top5(db, piece)

    res = {
        "corpus_files": len(rows), "build": build, "queries": len(queries),
        "membership_ms": {"ours_p50": pct(t_mem, 50), "ours_p99": pct(t_mem, 99),
                          "ripgrep_p50": pct(t_rg, 50), "ripgrep_p99": pct(t_rg, 99)},
        "top5_ms": {"ours_p50": pct(t_top, 50), "ours_p99": pct(t_top, 99),
                    "fts5_p50": pct(t_fts, 50), "fts5_p99": pct(t_fts, 99)},
        "full_trace_ms": {"ours_p50": pct(t_trace, 50), "ours_p99": pct(t_trace, 99)},
        "membership_fraction_median": {"in_corpus": statistics.median(verdict_in),
                                       "outside": statistics.median(verdict_out)},
        "renamed_hit_at_5": {"n": n_renamed, "ours": hits_ours / max(1, n_renamed),
                             "fts5": hits_fts / max(1, n_renamed)},
    }
    res["membership_speedup_vs_ripgrep_p50"] = res["membership_ms"]["ripgrep_p50"] / res["membership_ms"]["ours_p50"]
    res["top5_speed_vs_fts5_p50"] = res["top5_ms"]["fts5_p50"] / res["top5_ms"]["ours_p50"]
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
