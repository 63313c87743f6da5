"""`domainfm code pack`: curated corpus -> repository samples -> fixed-length token rows with FIM per row.

Flow: scan the corpus metadata (repo_name, size), hold out whole repositories for validation, cut
each split into work units of about `shard_mb` of source, and run the units on `LocalExecutor`
(completion markers, so a rerun after kill -9 skips finished shards and ends byte-identical). Each
unit reads its rows, builds one plain sample per repository (`fim.repo_sample`, no FIM), tokenises
all text pieces with `encode_batch`, concatenates the samples into one token stream and cuts it into
rows of `seq_len` tokens (samples run on across row boundaries, as in Megatron / nanotron). FIM is
then applied to every row as Megatron-LM applied it to StarCoder2's training sequences
(`fim_rows.fim_rows`: fragments split at `<|endoftext|>` / `<file_sep>`, each row cut back or padded
to `seq_len` with `<fim_pad>`, whose id is recorded as `pad_id` and masked from the loss).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.code.data.corpus import corpus_shards
from domainfm.code.data.fim import FORMAT_KINDS, SampleStats, Special, format_sample, repo_sample
from domainfm.code.data.fim_rows import FimRowStats, FimTokenIds, fim_rows
from domainfm.code.data.mixture import (
    Mixture,
    load_mixture,
    mixture_entries,
    mixture_stats,
    row_copies,
    scan_sources,
    source_of,
)
from domainfm.code.data.plan import NO_REPO, make_units, make_units_from_entries, scan_repos, split_repos
from domainfm.code.data.shards import token_dtype, write_index, write_shard
from domainfm.code.tokenizer.special import (
    EOS,
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PAD,
    FIM_PREFIX,
    FIM_SUFFIX,
    REPO_NAME,
    STARCODER2_SPECIAL_TOKENS,
)
from domainfm.core.errors import UserError, require
from domainfm.core.executor import LocalExecutor
from domainfm.core.io import atomic_write_json, sha256_file
from domainfm.core.progress import get_logger, progress

log = get_logger("pack")
FORMAT = "domainfm-packed-v2"  # v2: FIM per row (Megatron / StarCoder2), not per file
ENCODE_BATCH_CHARS = 8 << 20  # tokenise about 8M characters per encode_batch call


def load_tokenizer(tokenizer_dir: str | Path) -> Any:
    """The `tokenizers.Tokenizer` of a tokenizer folder, checked for the tokens packing needs.

    `encode_special_tokens = True`: special-token strings that occur *in source text* are tokenised as
    text; structure tokens are inserted by id only. (The PII placeholders are non-special added
    tokens and stay single tokens.)"""
    tk = require("tokenizers", "code")
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{tokenizer_dir}: no tokenizer.json; train one with `domainfm code tokenizer train`")
    tok = tk.Tokenizer.from_file(str(path))
    missing = [t for t in (EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP)
               if tok.token_to_id(t) is None]
    if missing:
        raise UserError(f"{tokenizer_dir}: tokenizer lacks {', '.join(missing)}")
    tok.encode_special_tokens = True
    return tok


class PackTask:
    """One work unit -> one shard. Picklable (stores paths only); runs in executor worker processes."""

    def __init__(self, out_dir: str, show_progress: bool) -> None:
        self.out_dir = out_dir
        self.show_progress = show_progress

    def __call__(self, rank: int, world_size: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = Path(self.out_dir)
        plan = json.loads((out / "_work" / "plan.json").read_text())
        unit, s = plan["units"][rank], plan["settings"]
        tok = load_tokenizer(s["tokenizer"])
        # every StarCoder2 token the tokenizer has (the notebook / issue / PR formats use the others)
        ids = {t: i for t in STARCODER2_SPECIAL_TOKENS if (i := tok.token_to_id(t)) is not None}
        rows = _read_rows([Path(f) for f in plan["corpus_files"]], unit["repos"])
        stats = SampleStats()
        empty = 0
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        batch: list[list[Any]] = []
        n_chars = 0
        bar = progress(total=len(unit["repos"]), desc=f"pack {unit['file']}", unit="repo", leave=False) \
            if self.show_progress else contextlib.nullcontext()
        docs = dict.fromkeys(FORMAT_KINDS, 0)
        tags: list[list[str]] = []  # per sample, the source of each piece (tokens counted per source)
        by_source: dict[str, dict[str, int]] = {}
        for repo, refs, *copy in unit["repos"]:  # copy: [k] for a data mixture's k-th extra copy
            files, formatted = [], []
            for fi, ri in refs:
                path, content, kind, lang = rows[(fi, ri)]
                src = source_of(kind, lang)
                if content is None:
                    empty += 1  # null content: nothing to learn from; counted, not packed
                    continue
                by_source.setdefault(src, {"files": 0, "tokens": 0})["files"] += 1
                if kind in FORMAT_KINDS:  # notebook (structured) / issue / PR: a document of its own
                    formatted.append((path or "", content, src))
                    docs[kind] += 1
                else:
                    files.append((path or "", content, src))
            name = "" if repo == NO_REPO else repo
            key = f"{name}\x00copy:{copy[0]}" if copy else None
            # plain samples: FIM is applied per row below, after the stream is cut
            samples, stags = [], []
            if files:
                stags.append([])
                samples.append(repo_sample(name, files, s["seed"], 0.0, 0.0, s["repo_meta_rate"], stats, key=key,
                                           tags=stags[-1]))
            for _, content, src in sorted(formatted):
                samples.append(format_sample(content))
                stags.append([src] * len(samples[-1]))
            if not samples:
                continue
            batch.extend(samples)
            tags.extend(stags)
            n_chars += sum(len(p) for pieces in samples for p in pieces if isinstance(p, str))
            if n_chars >= ENCODE_BATCH_CHARS:
                chunks.append(_tokenise(tok, batch, ids, tags, by_source))
                batch, tags, n_chars = [], [], 0
            if self.show_progress:
                bar.update(1)
        if batch:
            chunks.append(_tokenise(tok, batch, ids, tags, by_source))
        if self.show_progress:
            bar.close()
        stream = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, dtype=np.uint32)
        path_sep = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=bool)
        seq_len = s["seq_len"]
        n_seqs = -(-len(stream) // seq_len)
        cuts = [slice(k * seq_len, min((k + 1) * seq_len, len(stream))) for k in range(n_seqs)]
        fim_ids = FimTokenIds(prefix=ids[FIM_PREFIX], middle=ids[FIM_MIDDLE], suffix=ids[FIM_SUFFIX],
                              pad=ids[FIM_PAD], eos=ids[EOS], file_sep=ids[FILE_SEP],
                              blocked=frozenset(ids.values()))
        # (n_seqs, seq_len): each row FIM-transformed, cut back or padded to seq_len
        seqs, fs = fim_rows(tok, [stream[c].astype(np.int64) for c in cuts], [path_sep[c] for c in cuts], fim_ids,
                            seq_len, s["seed"], unit["file"], s["fim_rate"], s["fim_fragment_rate"],
                            s["fim_spm_rate"]) if n_seqs else (np.zeros((0, seq_len), dtype=np.int64), FimRowStats())
        write_shard(out / unit["file"], seqs.astype(np.dtype(s["dtype"])))
        n_pad = int(fs.pad_tokens)
        return {"split": unit["split"], "file": unit["file"], "n_seqs": int(n_seqs),
                "n_tokens": int(n_seqs * seq_len - n_pad), "n_stream_tokens": int(len(stream)),
                "n_pad_tokens": n_pad, "n_truncated_tokens": int(fs.truncated_tokens), "n_repos": len(unit["repos"]),
                "n_files": stats.files + sum(docs.values()), "n_null_content": empty,
                **{f"n_docs_{k}": v for k, v in docs.items()}, "fim_psm": fs.psm, "fim_spm": fs.spm,
                "fim_kept_plain": fs.kept_plain, "samples_with_meta": stats.with_meta,
                "by_source": dict(sorted(by_source.items())), "seconds": round(time.perf_counter() - t0, 3)}


def _read_rows(files: list[Path], repos: list[list[Any]]
               ) -> dict[tuple[int, int], tuple[str, str | None, str, str | None]]:
    """(file_idx, row_idx) -> (path, content, kind, language) for the rows of these repos, reading only
    their row groups; `kind` is curate's record kind ("file" where the corpus has no `kind` column)."""
    pq = require("pyarrow.parquet", "code")
    wanted: dict[int, set[int]] = {}
    for _, refs, *_ in repos:
        for fi, ri in refs:
            wanted.setdefault(fi, set()).add(ri)
    out: dict[tuple[int, int], tuple[str, str | None, str, str | None]] = {}
    for fi, rows in sorted(wanted.items()):
        pf = pq.ParquetFile(files[fi])
        have = pf.schema_arrow.names
        cols = ["path", "content"] + [c for c in ("kind", "language") if c in have]
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            local = sorted(r - start for r in rows if start <= r < start + n)
            if local:
                t = pf.read_row_group(g, columns=cols).take(local)
                col = {c: t.column(i).to_pylist() for i, c in enumerate(cols)}
                kinds = col.get("kind", ["file"] * len(local))
                langs = col.get("language", [None] * len(local))
                for r, p, c, k, lang in zip(local, col["path"], col["content"], kinds, langs, strict=True):
                    out[(fi, start + r)] = (p, c, k or "file", lang)
            start += n
    return out


def _tokenise(tok: Any, samples: list[list[Any]], ids: dict[str, int], tags: list[list[str]] | None = None,
              by_source: dict[str, dict[str, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a batch of samples, concatenated (text pieces via one `encode_batch` call), and a
    mask of the same length, True on each `<file_sep>` that a `PATH\\n` follows (samples with metadata).

    With `tags` (one source per piece of each sample), each piece's token count is added to
    `by_source[source]["tokens"]`."""
    # a format token this tokenizer lacks stays text
    samples = [[p.token if isinstance(p, Special) and p.token not in ids else p for p in pieces]
               for pieces in samples]
    texts = [p for pieces in samples for p in pieces if isinstance(p, str) and p]
    encs = iter(tok.encode_batch(texts, add_special_tokens=False))
    out: list[int] = []
    path_at: list[int] = []
    for si, pieces in enumerate(samples):
        meta = bool(pieces) and pieces[0] == Special(REPO_NAME)
        for pi, p in enumerate(pieces):
            before = len(out)
            if isinstance(p, Special):
                if meta and p.token == FILE_SEP:
                    path_at.append(len(out))
                out.append(ids[p.token])
            elif p:
                out.extend(next(encs).ids)
            if tags is not None and by_source is not None:
                by_source.setdefault(tags[si][pi], {"files": 0, "tokens": 0})["tokens"] += len(out) - before
    mask = np.zeros(len(out), dtype=bool)
    mask[path_at] = True
    return np.asarray(out, dtype=np.uint32), mask


def pack_corpus(corpus_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, seq_len: int,
                fim_rate: float = 0.5, seed: int = 0, val_fraction: float = 0.05, workers: int = 1,
                fim_spm_rate: float = 0.5, repo_meta_rate: float = 0.5, shard_mb: float = 32.0,
                overwrite: bool = False, fim_fragment_rate: float = 0.5,
                mixture: str | Path | Mixture | None = None) -> dict[str, Any]:
    """Pack a curated corpus into `out_dir` (see module doc); returns the index (also `out_dir/index.json`).

    `mixture` (a preset name, a YAML file or a `Mixture`) weights the corpus's sources (`mixture.py`);
    the draws use `seed`, and the mixture and its per-source counts are recorded in the index.
    Rerunning with the same arguments resumes an interrupted run (or returns at once when finished)."""
    if seq_len < 2:
        raise UserError(f"--seq-len must be >= 2 (got {seq_len})")
    for name, v in (("fim-rate", fim_rate), ("val-fraction", val_fraction), ("fim-spm-rate", fim_spm_rate),
                    ("repo-meta-rate", repo_meta_rate), ("fim-fragment-rate", fim_fragment_rate)):
        if not 0.0 <= v <= 1.0:
            raise UserError(f"--{name} must be in [0, 1] (got {v})")
    if val_fraction >= 1.0:
        raise UserError("--val-fraction must be < 1 (some repositories must remain for training)")
    t0 = time.perf_counter()
    mix = mixture if isinstance(mixture, Mixture) or mixture is None else load_mixture(mixture)
    out = Path(out_dir)
    files = corpus_shards(corpus_dir)
    tok = load_tokenizer(tokenizer_dir)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    settings = {
        "seq_len": seq_len, "dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size, "seed": seed,
        "tokenizer": str(Path(tokenizer_dir).resolve()),
        "tokenizer_sha256": sha256_file(Path(tokenizer_dir) / "tokenizer.json"),
        "fim_rate": fim_rate, "fim_spm_rate": fim_spm_rate, "fim_fragment_rate": fim_fragment_rate,
        "repo_meta_rate": repo_meta_rate, "format": FORMAT,
        "val_fraction": val_fraction, "shard_mb": shard_mb,
        "corpus": [[str(f.resolve()), f.stat().st_size] for f in files],
    }
    if mix is not None:  # only then: a pack without a mixture keeps its fingerprint (and resumes)
        settings["mixture"] = mix.to_dict()
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    plan_path = out / "_work" / "plan.json"
    if overwrite and out.exists():
        shutil.rmtree(out)
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if old.get("fingerprint") != fingerprint:
            raise UserError(f"{out} holds a pack made with other settings or data; "
                            "pass --overwrite to replace it (or choose another -o)")
    # (an empty _work/ alone is a run that died before writing its plan, e.g. on a full disk: start it again)
    elif out.exists() and any(p.name != "_work" or any(p.iterdir()) for p in out.iterdir()):
        raise UserError(f"{out} exists and is not a pack in progress; pass --overwrite or choose another -o")
    if (out / "index.json").is_file() and plan_path.is_file():
        log.info("pack: %s is already complete", out)
        return json.loads((out / "index.json").read_text())

    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
    else:
        members, counts = scan_repos(files)
        if not members:
            raise UserError(f"{corpus_dir}: the corpus has no rows")
        train, val = split_repos(sorted(members), val_fraction, seed)
        # shards follow the corpus order (a repository at its first row): a work unit then reads a
        # contiguous run of row groups instead of the whole corpus; the trainer shuffles sequences
        train.sort(key=lambda r: members[r][0][:2])
        val.sort(key=lambda r: members[r][0][:2])
        shard_bytes = int(shard_mb * 2**20)
        mix_record = None
        if mix is None:
            units = make_units("train", train, members, shard_bytes) + make_units("val", val, members, shard_bytes)
        else:
            units, mix_record = _mixture_units(files, mix, seed, train, val, members, shard_bytes)
        plan = {"fingerprint": fingerprint, "settings": settings, "corpus_files": [str(f) for f in files],
                "counts": counts, "repos": {"train": train, "val": val}, "units": units}
        if mix_record is not None:
            plan["mixture"] = mix_record
        atomic_write_json(plan_path, plan)

    ex = LocalExecutor(PackTask(str(out), show_progress=workers <= 1), n_tasks=len(plan["units"]),
                       logging_dir=out / "_work", workers=workers, name="pack")
    summaries = ex.run()
    index = _build_index(plan, summaries)
    write_index(out, index)
    index["seconds"] = round(time.perf_counter() - t0, 2)  # reported, not stored: the index is deterministic
    return index


def _mixture_units(files: list[Path], mix: Mixture, seed: int, train: list[str], val: list[str],
                   members: dict[str, list[list[int]]], shard_bytes: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Work units of a mixture-weighted pack, and the mixture's record (weights, seed, rows per source)."""
    sources = scan_sources(files)
    n_copies = row_copies(sources, mix, seed)
    train_entries = mixture_entries(train, members, n_copies)
    if not train_entries:
        raise UserError(f"mixture {mix.name!r} keeps no row of the train split (every source has weight 0 "
                        f"or rounds to no copy); sources here: {', '.join(sorted({s for s, _ in sources.values()}))}")
    val_entries = mixture_entries(val, members, n_copies, cap=1)
    split_of = {(fi, ri): name for name, repos in (("train", train), ("val", val))
                for r in repos for fi, ri, _ in members[r]}
    record = {**mix.to_dict(), "seed": seed, "sources": mixture_stats(sources, n_copies, split_of, mix)}
    units = make_units_from_entries("train", train_entries, shard_bytes) + \
        make_units_from_entries("val", val_entries, shard_bytes)
    return units, record


def _build_index(plan: dict[str, Any], summaries: list[dict[str, Any]]) -> dict[str, Any]:
    s = plan["settings"]
    tok = load_tokenizer(s["tokenizer"])
    splits: dict[str, Any] = {}
    for name in ("train", "val"):
        sums = [x for x in summaries if x["split"] == name]
        keys = ("n_seqs", "n_tokens", "n_stream_tokens", "n_pad_tokens", "n_truncated_tokens", "n_files",
                "n_null_content", "fim_psm", "fim_spm", "fim_kept_plain", "samples_with_meta",
                *(f"n_docs_{k}" for k in FORMAT_KINDS))
        by_source: dict[str, dict[str, int]] = {}
        for x in sums:
            for src, c in x.get("by_source", {}).items():
                acc = by_source.setdefault(src, {"files": 0, "tokens": 0})
                acc["files"] += c["files"]
                acc["tokens"] += c["tokens"]
        splits[name] = {"shards": [{"file": x["file"], "n_seqs": x["n_seqs"]} for x in sums],
                        **{k: sum(x[k] for x in sums) for k in keys},
                        # stream tokens (before FIM sentinels and padding) and files per source
                        "by_source": dict(sorted(by_source.items())),
                        "n_repos": len(plan["repos"][name]), "repos": plan["repos"][name]}
    extra = {"mixture": plan["mixture"]} if "mixture" in plan else {}
    return {"format": FORMAT, "seq_len": s["seq_len"], "dtype": s["dtype"], "vocab_size": s["vocab_size"],
            "seed": s["seed"], "tokenizer": s["tokenizer"], "tokenizer_sha256": s["tokenizer_sha256"],
            "fim_rate": s["fim_rate"], "fim_spm_rate": s["fim_spm_rate"],
            "fim_fragment_rate": s["fim_fragment_rate"], "fim_layout": "starcoder2-megatron-per-row",
            "repo_meta_rate": s["repo_meta_rate"], "val_fraction": s["val_fraction"],
            "pad_id": tok.token_to_id(FIM_PAD), "eos_id": tok.token_to_id(EOS),
            "corpus_rows": plan["counts"]["rows"], "rows_without_repo_name": plan["counts"]["no_repo_name"],
            "splits": splits, **extra}


__all__ = ["pack_corpus", "load_tokenizer", "PackTask"]
