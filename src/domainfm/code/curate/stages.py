"""The sharded stages of a curation run; each shard writes its outputs atomically, then its marker.

    s1 (per shard)  read -> sources -> language -> license -> quality; MinHash signatures of the survivors
    s2 (global)     exact + near dedup decisions (per record kind), OUT/dedup_clusters.parquet
    s3 (per shard)  apply dedup decisions -> PII redaction -> decontamination -> OUT/data/*.parquet
Dropped records go to OUT/removed/*.parquet with their step and reason. `sources` expands notebooks and
GitHub thread files into records of their own `kind` (see `curate.sources`); the quality filter is the
plain-file one (StarCoder2 gave notebooks, issues and PRs their own filters, applied in `sources`), while
dedup, PII redaction and decontamination apply to every kind.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from domainfm.code.curate import readers
from domainfm.code.curate.config import CurateConfig
from domainfm.code.curate.decontam import Decontaminator, load_items
from domainfm.code.curate.encoding import decode
from domainfm.code.curate.filters import Decode, LanguageFilter, LicenseFilter, QualityFilter, read_opt_out
from domainfm.code.curate.licenses import LicenseMap, is_license_candidate, license_type
from domainfm.code.curate.pii import find_pii, redact
from domainfm.code.curate.sources import SourceStep
from domainfm.core.errors import UserError
from domainfm.core.io import read_parquet_rows, write_parquet
from domainfm.core.steps import Filter, Record, Step, StepContext, run_pipeline


def kill_point(name: str) -> None:
    """Test hook: ``DOMAINFM_CURATE_KILL_AT=<name>`` SIGKILLs this process here (a real kill -9)."""
    if os.environ.get("DOMAINFM_CURATE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def schemas() -> dict[str, Any]:
    import pyarrow as pa

    s, i64 = pa.string(), pa.int64()
    data = pa.schema([("swhid", s), ("repo_name", s), ("path", s), ("language", s), ("license_type", s),
                      ("licenses", pa.list_(s)), ("content", pa.large_string()), ("size", i64), ("encoding", s),
                      ("commit", s), ("kind", s), ("n_redactions", pa.int32())])
    kept = pa.schema([f for f in data if f.name != "n_redactions"] + [("repo_idx", i64), ("file_idx", i64)])
    removed = pa.schema([("swhid", s), ("repo_name", s), ("path", s), ("step", s), ("reason", s), ("detail", s),
                         ("size", i64), ("language", s), ("kind", s)])
    pii = pa.schema([("swhid", s), ("repo_name", s), ("path", s), ("type", s), ("detector", s), ("start", i64),
                     ("end", i64), ("replacement", s)])
    return {"data": data, "kept": kept, "removed": removed, "pii": pii}


class _Sink:
    """Drop sink collecting removed-table rows (no content)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, rec: Record, step: str, reason: str) -> None:
        self.rows.append({"swhid": rec.get("swhid"), "repo_name": rec.get("repo_name"), "path": rec.get("path"),
                          "step": step, "reason": reason, "detail": rec.get("_detail"),
                          "size": int(rec.get("size") or 0), "language": rec.get("language"),
                          "kind": rec.get("kind") or "file"})


def load_plan(work: Path) -> dict[str, Any]:
    return json.loads((work / "plan.json").read_text())


def _repo_records(spec: readers.RepoSpec, repo_idx: int, part: int, n_parts: int,
                  max_size: int, empty: list[str], detector: str = "rules") -> Iterator[Record]:
    commit = None
    if spec.kind == "dir":
        listing = readers.list_dir(spec)
        lic_texts = readers.license_files(spec, listing)
        indexed = list(enumerate(listing))[part::n_parts]
        raws: Iterable[tuple[int, Record]] = zip((i for i, _ in indexed),
                                                  readers.read_dir(spec, [p for _, p in indexed], max_size),
                                                  strict=True)
    else:
        if spec.kind == "git":
            commit, raw_list = readers.read_git(spec, max_size)
        else:
            raw_list = readers.read_archive(spec, max_size)
        listing = [r["path"] for r in raw_list]
        lic_texts = {r["path"]: r["data"] for r in raw_list if r["data"] is not None and is_license_candidate(r["path"])}
        raws = enumerate(raw_list)
    if not listing and part == 0:
        empty.append(spec.name)
    lic = LicenseMap(detector)
    for path, data in sorted(lic_texts.items()):
        text, _ = decode(data)
        if text is not None:
            lic.add_file(path, text)
    lookup = lic.lookup_fn()
    for file_idx, raw in raws:
        licenses = lookup(raw["path"])
        raw.update(repo_name=spec.name, repo_idx=repo_idx, file_idx=file_idx, commit=commit,
                   licenses=licenses, license_type=license_type(licenses))
        yield raw


def stage1(work: str, rank: int, world_size: int) -> dict[str, Any]:
    """Read the repositories of shard `rank`, run the per-file filters and compute signatures."""
    import numpy as np

    from domainfm.code.curate.minhash import MinHasher
    from domainfm.core.io import atomic_path

    wd = Path(work)
    plan = load_plan(wd)
    cfg = CurateConfig(**plan["config"])
    specs = [readers.RepoSpec(**r) for r in plan["repos"]]
    owners, repos = read_opt_out(cfg.opt_out)
    if cfg.pii_model and not (Path(cfg.pii_model) / "config.json").is_file():  # fail before any work, not at s3
        raise UserError(f"--pii-model: no model folder (config.json) at {cfg.pii_model}")
    sink = _Sink()
    ctx = StepContext(drop_sink=sink, rank=rank, world_size=world_size)
    empty: list[str] = []

    def records() -> Iterator[Record]:
        for repo_idx, part, n_parts in plan["shards"][rank]:
            yield from _repo_records(specs[repo_idx], repo_idx, part, n_parts, cfg.max_file_size, empty,
                                     cfg.license_detector)

    sources = SourceStep(cfg.notebooks, cfg.github_dir)
    steps: list[Step] = [Decode(), sources, LanguageFilter(cfg.languages or None),
                         LicenseFilter(cfg.license_types, owners, repos)]
    if cfg.quality:
        steps.append(KindGate(QualityFilter(), {"file"}))
    kept = list(run_pipeline(steps, records(), ctx))
    sch = schemas()
    write_parquet(wd / "s1" / f"kept-{rank:05d}.parquet", [{k: r.get(k) for k in sch["kept"].names} for r in kept],
                  schema=sch["kept"])
    if cfg.near_dedup:
        sigs = MinHasher(cfg.num_perm, cfg.ngram).signatures([r["content"] for r in kept])
        with atomic_path(wd / "s1" / f"sig-{rank:05d}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, sigs)
    write_parquet(Path(plan["out"]) / "removed" / f"s1-{rank:05d}.parquet", sink.rows, schema=sch["removed"])
    kill_point(f"s1-{rank}")
    return {"stats": ctx.stats.to_dict(), "empty_repos": empty, "kept": len(kept), "sources": dict(sources.counts)}


class KindGate(Step):
    """Run `inner` (under its own name) on records of the given kinds only; pass the others through."""

    def __init__(self, inner: Step, kinds: set[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.kinds = frozenset(kinds)

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            if (rec.get("kind") or "file") in self.kinds:
                yield from self.inner.process(iter([rec]), ctx)
            else:
                yield rec


class DedupFilter(Filter):
    """Apply the global dedup decisions: drop a row decided a duplicate at this step."""

    def __init__(self, name: str, decisions: dict[int, tuple[str, str, str]]) -> None:
        self.name = name
        self.decisions = decisions

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        d = self.decisions.get(rec["_row"])
        if d is not None and d[0] == self.name:
            rec["_detail"] = d[2]
            return False, d[1]
        return True


class PIIStep(Step):
    """Redact PII in place; collect one side-table row per redaction (never the secret)."""

    name = "pii"

    def __init__(self, table: list[dict[str, Any]], enabled: bool = True, ner: Any = None) -> None:
        self.table = table
        self.enabled = enabled
        self.ner = ner  # optional token-classification model (pii_ner.NerPII)
        self.counts: Counter = Counter()

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            spans = find_pii(rec["content"], path=rec["path"], ner=self.ner) if self.enabled else []
            if spans:
                rec["content"] = redact(rec["content"], spans)
                for s in spans:
                    self.counts[s.type] += 1
                    self.table.append({"swhid": rec["swhid"], "repo_name": rec["repo_name"], "path": rec["path"],
                                       "type": s.type, "detector": s.detector, "start": s.start, "end": s.end,
                                       "replacement": s.replacement})
            rec["n_redactions"] = len(spans)
            yield rec


class DecontamFilter(Filter):
    name = "decontaminate"

    def __init__(self, decontaminator: Decontaminator) -> None:
        self.d = decontaminator
        self.counts: Counter = Counter()  # files dropped per benchmark

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        item = self.d.match(rec["content"])
        if item is None:
            return True
        rec["_detail"] = f"{item.benchmark}:{item.item_id}:{item.field}"
        self.counts[item.benchmark] += 1
        return False, "benchmark_contamination"


def stage3(work: str, rank: int, world_size: int) -> dict[str, Any]:
    """Dedup decisions, PII redaction and decontamination for shard `rank`; write the final shard."""
    import pyarrow.parquet as pq

    wd = Path(work)
    plan = load_plan(wd)
    cfg = CurateConfig(**plan["config"])
    out = Path(plan["out"])
    table = pq.read_table(wd / "s2" / "decisions.parquet", filters=[("shard", "=", rank)])
    decisions = {r["row"]: (r["step"], r["reason"], r["detail"]) for r in table.to_pylist()}
    sink = _Sink()
    ctx = StepContext(drop_sink=sink, rank=rank, world_size=world_size)
    pii_rows: list[dict[str, Any]] = []
    bench = cfg.decontam_benchmarks
    items = load_items(cfg.humaneval, cfg.mbpp or None, cfg.decontaminate, cfg.decontaminate_field,
                       benchmarks=None if bench == ["all"] else [b for b in bench if b != "none"])
    ner = None
    if cfg.pii_model:
        from domainfm.code.curate.pii_ner import NerPII

        ner = NerPII(cfg.pii_model)
    steps: list[Step] = [DedupFilter("exact_dedup", decisions), DedupFilter("near_dedup", decisions),
                         PIIStep(pii_rows, cfg.pii, ner), DecontamFilter(Decontaminator(items, cfg.decontam_min_chars))]

    def rows() -> Iterator[Record]:
        for i, r in enumerate(read_parquet_rows([wd / "s1" / f"kept-{rank:05d}.parquet"])):
            r["_row"] = i
            yield r

    kept = list(run_pipeline(steps, rows(), ctx))
    sch = schemas()
    langs: dict[str, list[int]] = {}
    kinds: dict[str, list[int]] = {}
    for r in kept:
        for table, key in ((langs, r["language"]), (kinds, r.get("kind") or "file")):
            c = table.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += int(r["size"])
    if kept:  # no empty shards: `datasets` cannot read a Parquet file without row groups
        write_parquet(out / "data" / f"part-{rank:05d}.parquet",
                      [{k: r.get(k) for k in sch["data"].names} for r in kept], schema=sch["data"])
    write_parquet(out / "removed" / f"s3-{rank:05d}.parquet", sink.rows, schema=sch["removed"])
    write_parquet(wd / "s3" / f"pii-{rank:05d}.parquet", pii_rows, schema=sch["pii"])
    kill_point(f"s3-{rank}")
    return {"stats": ctx.stats.to_dict(), "languages": langs, "kinds": kinds,
            "pii": dict(steps[2].counts), "decontamination": dict(steps[3].counts)}  # type: ignore[attr-defined]
