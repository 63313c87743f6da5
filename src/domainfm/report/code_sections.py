"""Sections of the code domain, in the order the data flows: curation -> tokenizer/packing -> pretraining
-> evaluation -> attribution. Each finds its stage by the files the stage writes (see the stage's module
docstring for the layout), so a run folder of any shape works, not only the demo's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from domainfm.report import plots
from domainfm.report.files import Malformed, RunFolder, load_json, load_jsonl, need
from domainfm.report.sections import SECTIONS, Section, common_parent, fmt_bytes, fmt_float, fmt_int, guarded


def _src(rel: Path) -> str:
    return str(rel.parent) if str(rel.parent) != "." else "."


@SECTIONS.register("code/curation")
def curation(run: RunFolder) -> list[Section]:
    """The curation funnel (OUT/stats.json), languages, licenses (from the corpus shards), PII, decontamination."""
    found = []
    for rel in run.named("stats.json"):
        try:
            stats = load_json(run.path(rel))
        except Malformed as exc:
            found.append(Section("code", "Curation", _src(rel)).warn(str(exc)))
            continue
        # a training subset's copy of the corpus stats (`demo_subset`) repeats the curation: skip it
        if isinstance(stats, dict) and "funnel" in stats and "demo_subset" not in stats:
            found.append(guarded("code", "Curation", _src(rel), lambda s, st=stats, r=rel: _curation(s, st, run, r)))
    return found


def _curation(sec: Section, st: dict, run: RunFolder, rel: Path) -> None:
    where = str(rel)
    funnel = need(st, "funnel", where=where)
    sec.kv([("files in", fmt_int(st.get("files_in"))), ("files kept", fmt_int(st.get("files_out"))),
            ("bytes in", fmt_bytes(st.get("bytes_in"))), ("bytes kept", fmt_bytes(st.get("bytes_out"))),
            ("repositories", fmt_int(st.get("repos"))), ("shards", fmt_int(st.get("shards")))])
    by_step = st.get("dropped_by_step") or {}
    rows = [[f["step"], fmt_int(f["files"]), fmt_bytes(f["bytes"]),
             ", ".join(f"{k} {v:,}" for k, v in (by_step.get(f["step"]) or {}).items())] for f in funnel]
    sec.images([(plots.funnel_png([f["step"] for f in funnel], [f["files"] for f in funnel],
                                  [f["bytes"] for f in funnel]), "files and MB left after each step")])
    sec.table(["step", "files", "bytes", "dropped (reason files)"], rows, "curation funnel, in pipeline order")
    dropped = sorted((st.get("dropped") or {}).items(), key=lambda kv: -kv[1])
    sec.table(["reason", "files"], [[k, fmt_int(v)] for k, v in dropped], "drops by reason")
    langs = st.get("languages") or {}
    sec.table(["language", "files", "bytes"],
              [[k, fmt_int(v.get("files")), fmt_bytes(v.get("bytes"))] for k, v in langs.items()], "languages kept")
    _licenses(sec, run.path(rel).parent)
    pii, decon = st.get("pii") or {}, st.get("decontamination") or {}
    sec.table(["PII kind", "redactions"], [[k, fmt_int(v)] for k, v in pii.items()], "PII redacted")
    if not pii:
        sec.text("PII: nothing redacted" if "pii" in st else "PII: not recorded")
    sec.table(["benchmark", "files removed"], [[k, fmt_int(v)] for k, v in decon.items()], "decontamination")
    if not decon:
        sec.text("decontamination: no file matched a benchmark" if "decontamination" in st
                 else "decontamination: not recorded")
    dd = st.get("dedup") or {}
    if dd:
        sec.kv([("dedup: files compared", fmt_int(dd.get("files"))),
                ("exact-duplicate clusters", fmt_int(dd.get("exact_clusters"))),
                ("near-duplicate clusters", fmt_int(dd.get("near_clusters")))])


def _licenses(sec: Section, corpus: Path) -> None:
    """License types and SPDX ids of the kept files, from the shards' `license_type`/`licenses` columns."""
    shards = sorted((corpus / "data").glob("*.parquet"))
    if not shards:
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        sec.warn("licenses: pyarrow is not installed (install domainfm[code])")
        return
    types: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    for shard in shards:
        try:
            names = pq.read_schema(shard).names
            cols = [c for c in ("license_type", "licenses") if c in names]
            if not cols:
                return
            for row in pq.read_table(shard, columns=cols).to_pylist():
                types[str(row.get("license_type"))] += 1
                for lic in row.get("licenses") or ["(none)"]:
                    ids[lic] += 1
        except Exception as exc:  # pyarrow raises its own error types for a damaged shard
            sec.warn(f"licenses: {shard.name}: unreadable Parquet ({exc.__class__.__name__})")
            return
    sec.table(["license type", "files"], [[k, fmt_int(v)] for k, v in types.most_common()], "license types kept")
    top = ids.most_common(12)
    rest = sum(ids.values()) - sum(v for _, v in top)
    sec.table(["license (SPDX)", "files"], [[k, fmt_int(v)] for k, v in top] + ([["others", fmt_int(rest)]] if rest else []),
              "licenses of kept files (a file may carry several)")


@SECTIONS.register("code/tokenizer")
def tokenizer(run: RunFolder) -> list[Section]:
    """Tokenizer training statistics and the packed dataset's index (FIM, tokens, sequences)."""
    found = []
    for rel in run.named("training_stats.json"):
        if not (run.path(rel).parent / "tokenizer.json").is_file():
            continue
        found.append(guarded("code", "Tokenizer", _src(rel), lambda s, r=rel: _tokenizer(s, run, r)))
    for rel in run.named("index.json"):
        if (run.path(rel).parent / "shards").is_dir():
            continue  # the attribution index, not a packed dataset
        try:
            idx = load_json(run.path(rel))
        except Malformed as exc:
            found.append(Section("code", "Packed dataset", _src(rel)).warn(str(exc)))
            continue
        if isinstance(idx, dict) and str(idx.get("format", "")).startswith("domainfm-packed"):
            found.append(guarded("code", "Packed dataset", _src(rel), lambda s, i=idx, r=rel: _packed(s, i, str(r))))
    return found


def _tokenizer(sec: Section, run: RunFolder, rel: Path) -> None:
    st = load_json(run.path(rel))
    if not isinstance(st, dict):
        raise Malformed(f"{rel}: not a JSON object")
    sec.kv([("vocabulary", fmt_int(st.get("vocab_size"))), ("requested", fmt_int(st.get("requested_vocab_size"))),
            ("min frequency", st.get("min_frequency")), ("files read", fmt_int(st.get("files_read"))),
            ("bytes read", fmt_bytes(st.get("bytes_read"))), ("training time", f"{st.get('seconds', 'n/a')} s")])


def _packed(sec: Section, idx: dict, where: str) -> None:
    splits = need(idx, "splits", where=where)
    sec.kv([("sequence length", idx.get("seq_len")), ("vocabulary", fmt_int(idx.get("vocab_size"))),
            ("FIM rate", idx.get("fim_rate")), ("FIM SPM rate", idx.get("fim_spm_rate")),
            ("layout", idx.get("fim_layout"))])
    rows = []
    for name, s in splits.items():
        n_tok = s.get("n_tokens") or 0
        rows.append([name, fmt_int(s.get("n_files")), fmt_int(s.get("n_seqs")), fmt_int(n_tok),
                     fmt_int(s.get("n_pad_tokens")), fmt_int(s.get("n_truncated_tokens")),
                     fmt_int(s.get("fim_psm")), fmt_int(s.get("fim_spm")), fmt_int(s.get("n_repos"))])
    sec.table(["split", "files", "sequences", "tokens", "pad", "truncated", "FIM PSM", "FIM SPM", "repos"], rows,
              "packed sequences per split")


@SECTIONS.register("code/pretraining")
def pretraining(run: RunFolder) -> list[Section]:
    """Loss curves: the trainer's loss.png, or a plot of metrics.jsonl when there is no PNG."""
    return [guarded("code", "Pretraining", _src(rel), lambda s, r=rel: _pretraining(s, run, r))
            for rel in run.named("metrics.jsonl")]


def _pretraining(sec: Section, run: RunFolder, rel: Path) -> None:
    rows = load_jsonl(run.path(rel))
    train = [r for r in rows if isinstance(r, dict) and "loss" in r and "step" in r]
    val = [r for r in rows if isinstance(r, dict) and r.get("val_loss") is not None and "step" in r]
    last = train[-1] if train else {}
    sec.kv([("steps", fmt_int(last.get("step"))), ("tokens seen", fmt_int(last.get("tokens"))),
            ("final train loss", fmt_float(last.get("loss"))),
            ("final val loss", fmt_float(val[-1]["val_loss"]) if val else None),
            ("tokens/s (last step)", fmt_int(last.get("tokens_per_s")))])
    png = run.path(rel).parent / "loss.png"
    if png.is_file():
        sec.images([(png, "training and validation loss (the trainer's plot)")])
    elif train:
        series = {"train loss": ([r["step"] for r in train], [r["loss"] for r in train])}
        if val:
            series["val loss"] = ([r["step"] for r in val], [r["val_loss"] for r in val])
        sec.images([(plots.curve_png(series, "step", "cross-entropy (nats/token)", "pretraining loss"),
                     "loss per step (from metrics.jsonl)")])
    else:
        sec.warn(f"{rel}: no loss rows")


@SECTIONS.register("code/evaluation")
def evaluation(run: RunFolder) -> list[Section]:
    """pass@k per task with its problem and sample counts, one row per (evaluation run, task), in one table
    so that runs compare at a glance (the harness's results.json)."""
    runs: list[tuple[Path, dict | Malformed]] = []
    for rel in run.named("results.json"):
        try:
            res = load_json(run.path(rel))
        except Malformed as exc:
            if (run.path(rel).parent / "samples_results.jsonl").is_file():
                runs.append((rel, exc))
            continue
        meta = res.get("metadata") if isinstance(res, dict) else None
        if isinstance(meta, dict) and "tasks" in meta:
            runs.append((rel, res))
    if not runs:
        return []
    return [guarded("code", "Evaluation", common_parent([r for r, _ in runs]), lambda s: _evaluation(s, runs))]


def _evaluation(sec: Section, runs: list[tuple[Path, dict | Malformed]]) -> None:
    rows = []
    for rel, res in runs:
        if isinstance(res, Malformed):
            sec.warn(str(res))
            continue
        meta = res["metadata"]
        tasks = need(meta, "tasks", where=str(rel))
        sandboxed = (meta.get("sandbox") or {}).get("isolated")
        for task, info in tasks.items():
            scores = res.get(task) or {}
            ks = sorted((k for k in scores if k.startswith("pass@")),
                        key=lambda k: int(k[5:]) if k[5:].isdigit() else 0)
            timing = info.get("timing") or {}
            rows.append([str(rel.parent), task, fmt_int(info.get("n_problems")), fmt_int(info.get("n_samples")),
                         ", ".join(f"{k} = {fmt_float(scores[k])}" for k in ks),
                         f"{timing.get('samples_per_s', 'n/a')}", "yes" if sandboxed else "no"])
    sec.table(["run", "task", "problems", "samples", "pass@k", "samples/s", "sandboxed"], rows,
              "functional correctness")


@SECTIONS.register("code/attribution")
def attribution(run: RunFolder) -> list[Section]:
    """The training-data index, the data card, and any trace summaries written next to them."""
    found = []
    for rel in run.named("index.json"):
        if (run.path(rel).parent / "shards").is_dir():
            found.append(guarded("code", "Attribution", _src(rel), lambda s, r=rel: _attribution(s, run, r)))
    return found


def _attribution(sec: Section, run: RunFolder, rel: Path) -> None:
    idx = load_json(run.path(rel))
    if not isinstance(idx, dict):
        raise Malformed(f"{rel}: not a JSON object")
    # totals over the shards' shard.json, as the index's own `describe` computes them
    infos = []
    for marker in sorted((run.path(rel).parent / "shards").glob("*/shard.json")):
        info = load_json(marker)
        if isinstance(info, dict):
            infos.append(info)
    miss = 1.0
    for i in infos:
        miss *= 1.0 - float(i.get("fpr") or 0.0)
    sec.kv([("format", idx.get("format")), ("files indexed", fmt_int(sum(int(i.get("n_docs") or 0) for i in infos))),
            ("shards", fmt_int(len(infos))), ("n-grams", fmt_int(sum(int(i.get("n_ngrams") or 0) for i in infos))),
            ("n-gram width (bytes)", idx.get("width")),
            ("false-positive rate per lookup", f"{1.0 - miss:.2g}" if infos else None)])
    root = run.path(rel).parent.parent
    cards = sorted(str(p.relative_to(run.root)) for p in root.rglob("datacard.md"))  # the sibling datacard/
    if cards:
        sec.text("data card: " + ", ".join(cards) + " (and its .html beside it)")
    for p in sorted(root.rglob("*trace*.json*")):
        try:
            rows = load_jsonl(p) if p.suffix == ".jsonl" else [load_json(p)]
        except Malformed as exc:
            sec.warn(str(exc))
            continue
        out = []
        for r in rows:
            # `code trace --samples S --json > F` writes {"samples": [...], "summary": {...}}
            if isinstance(r, dict) and isinstance(r.get("summary"), dict):
                sm = r["summary"]
                sec.kv([("traced samples", fmt_int(sm.get("samples"))),
                        (f"with a training span >= {sm.get('min_span_chars', '?')} chars",
                         fmt_int(sm.get("with_training_span"))), ("untraceable", fmt_int(sm.get("untraceable")))])
            inner = r.get("samples") if isinstance(r, dict) and isinstance(r.get("samples"), list) else [r]
            for t in inner:
                if isinstance(t, dict) and "longest_span_chars" in t:
                    top = t.get("top_hit") or {}
                    out.append([t.get("id", ""), fmt_int(t.get("chars")), fmt_int(t.get("longest_span_chars")),
                                f"{top.get('repo_name', '')}/{top.get('path', '')}" if top else "-"])
        sec.table(["sample", "chars", "longest span found in training data", "closest file"], out,
                  f"trace summary ({p.relative_to(run.root)})")
