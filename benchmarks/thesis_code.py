"""Does curation help at our scale? Raw vs curated corpora from the same repositories, same compute.

From one set of repositories (this venv's stdlib modules and small site-packages distributions, the code
demo's sources: real code with real duplication, vendored copies, generated and data files), build

- **raw**: every file the readers read that decodes as text (no language, licence, quality filter, no
  exact/near dedup, no PII redaction), and
- **curated**: `domainfm code curate`'s full pipeline;

both are decontaminated against the same benchmarks (the curate default list, which includes
HumanEval-infilling), so the infilling score measures generalisation, not memorised test lines. One BPE
tokenizer is trained on a 50/50 byte mix of both corpora (neither model gets a vocabulary fit to its own
data). Each corpus is packed the same way (FIM rate 0.5, repository samples) and the same preset is trained
for the same number of optimizer steps x tokens per step (equal tokens seen) with the same seed. Both
models are then compared on

- held-out loss (nats/token and bits/byte) over **clean code in neither training set**: files of
  held-out repositories (never read into either corpus) that passed the full curation pipeline, minus
  any file that is an exact or MinHash near-duplicate (the curate dedup settings) of a raw training file;
- HumanEval single-line infilling exact match (`humaneval-fim-single-line`, scored by the task's own
  exact-match rule, so no sandbox is needed), greedy.

Every stage writes into OUT and is skipped when its output exists, so a rerun after kill -9 continues
(curation, packing, training and generation resume inside the stage too). Usage:

    nice -n 10 .venv/bin/python benchmarks/thesis_code.py -o runs/thesis_code          # ~35 min, 2 shared cores
    nice -n 10 .venv/bin/python benchmarks/thesis_code.py -o /tmp/tc_smoke --smoke     # ~1-2 min

The Markdown table is printed and the figures are written to OUT/summary.json (see docs/thesis_code.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

# (repository selection, tokenizer, packing, training, evaluation) of the measured run and of the smoke test.
# train_bytes / heldout_bytes: bytes the readers list (text and binary) in the chosen repositories.
SIZES: dict[str, dict[str, Any]] = {
    "default": {"train_bytes": 5_000_000, "heldout_bytes": 1_000_000, "max_repo_bytes": 1_500_000,
                "max_repo_files": 200, "heldout_every": 8, "vocab": 4096, "tok_bytes": 2_000_000,
                "seq_len": 128, "batch": 4, "steps": 100, "lr": 2e-3, "preset": "tiny",
                "heldout_max_files": 60, "heldout_max_bytes": 150_000, "infill_limit": 150,
                "max_new_tokens": 32},
    "smoke": {"train_bytes": 250_000, "heldout_bytes": 120_000, "max_repo_bytes": 150_000,
              "max_repo_files": 30, "heldout_every": 4, "vocab": 512, "tok_bytes": 200_000,
              "seq_len": 64, "batch": 4, "steps": 3, "lr": 2e-3, "preset": "tiny",
              "heldout_max_files": 4, "heldout_max_bytes": 8_000, "infill_limit": 4, "max_new_tokens": 4},
}
SEED = 0


def _key(name: str) -> str:
    return hashlib.sha1(f"thesis-code:{name}".encode()).hexdigest()


def _done(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------------------- repositories
def select_repos(sz: dict[str, Any]) -> dict[str, Any]:
    """Candidates = the code demo's sources (stdlib modules, site-packages distributions of at most
    `max_repo_files` files) whose listed bytes stay under `max_repo_bytes` (skips the wheels that are
    mostly compiled libraries). A repository is held out when its seeded hash says so (1 in
    `heldout_every`); then repositories are taken in hash order until each side's byte budget holds."""
    from domainfm.code.curate import readers
    from domainfm.code.curate.demo import site_package_repos, stdlib_repos

    train: list[dict] = []
    held: list[dict] = []
    sizes = {"train": 0, "heldout": 0}
    specs = stdlib_repos() + site_package_repos(max_repo_files=sz["max_repo_files"])
    for spec in sorted(specs, key=lambda s: _key(s.name)):
        listing = readers.list_dir(spec)
        nbytes = sum((Path(spec.path) / p).stat().st_size for p in listing if (Path(spec.path) / p).is_file())
        if not listing or nbytes > sz["max_repo_bytes"]:
            continue
        side = "heldout" if int(_key(spec.name), 16) % sz["heldout_every"] == 0 else "train"
        budget = sz[f"{side}_bytes"]
        if sizes[side] + nbytes > budget:
            continue
        (held if side == "heldout" else train).append({**spec.to_dict(), "files": len(listing), "bytes": nbytes})
        sizes[side] += nbytes
    return {"train": train, "heldout": held, "bytes": sizes}


def _specs(rows: list[dict]) -> list[Any]:
    from domainfm.code.curate.readers import RepoSpec

    return [RepoSpec(**{k: v for k, v in r.items() if k not in ("files", "bytes")}) for r in rows]


# ----------------------------------------------------------------------------------------- corpora
def curate_corpus(out: Path, repos: list[Any], workers: int) -> dict[str, Any]:
    """The full pipeline (curate defaults: language, licence, quality, exact + near dedup, PII, decontam)."""
    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.pipeline import curate

    done = _done(out / "stats.json")
    return done if done is not None else curate(CurateConfig(out=str(out), workers=workers), repos)


def raw_corpus(out: Path, repos: list[Any], max_file_size: int) -> dict[str, Any]:
    """Every file the readers read that decodes as text; only benchmark decontamination (the same
    Decontaminator and benchmark list as curate's defaults) is applied, so the infilling eval stays fair."""
    from domainfm.code.curate import readers
    from domainfm.code.curate.decontam import Decontaminator, load_items
    from domainfm.code.curate.encoding import decode
    from domainfm.code.curate.languages import detect_language
    from domainfm.core.io import atomic_write_json, write_parquet

    done = _done(out / "stats.json")
    if done is not None:
        return done
    deco = Decontaminator(load_items(True, None))
    rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    files_in = bytes_in = 0
    for spec in repos:
        for raw in readers.read_dir(spec, readers.list_dir(spec), max_file_size):
            files_in += 1
            bytes_in += int(raw.get("size") or 0)
            text, enc = (None, raw["error"]) if raw.get("error") else decode(raw["data"])
            reason = enc if text is None else ("benchmark_contamination" if deco.match(text) else None)
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            rows.append({"swhid": raw["swhid"], "repo_name": spec.name, "path": raw["path"], "content": text,
                         "language": detect_language(raw["path"], text[:200]), "size": len(text.encode())})
    write_parquet(out / "data" / "part-00000.parquet", rows)
    stats = {"files_in": files_in, "bytes_in": bytes_in, "files_out": len(rows),
             "bytes_out": sum(r["size"] for r in rows), "dropped": dict(sorted(dropped.items())),
             "repos": len(repos)}
    assert stats["files_in"] == stats["files_out"] + sum(dropped.values()), "files lost"
    atomic_write_json(out / "stats.json", stats)
    return stats


def _rows(corpus: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    from domainfm.code.data.corpus import corpus_shards
    from domainfm.core.io import read_parquet_rows

    return list(read_parquet_rows(corpus_shards(corpus), columns=columns))


def heldout_set(out: Path, curated_heldout: Path, raw: Path, sz: dict[str, Any]) -> dict[str, Any]:
    """Clean held-out code: curated files of the held-out repositories, Python files only, minus
    exact (swhid) and MinHash near-duplicates of any raw training file (curate's dedup settings: 256
    permutations, 5-gram shingles, 25 bands x 10 rows, 3 LSH rounds, Jaccard >= 0.65); then a seeded
    sample of at most `heldout_max_files` files / `heldout_max_bytes` bytes."""
    import numpy as np

    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.dedup import near_clusters
    from domainfm.code.curate.minhash import MinHasher
    from domainfm.core.errors import UserError
    from domainfm.core.io import atomic_write_json, write_parquet

    done = _done(out / "stats.json")
    if done is not None:
        return done
    # Python only: the language of HumanEval and most of these repositories; "code", not docs or data files
    cand = [r for r in _rows(curated_heldout) if (r.get("kind") or "file") == "file" and r["language"] == "Python"]
    train = _rows(raw, ["swhid", "content"])
    train_ids = {r["swhid"] for r in train}
    exact = [r for r in cand if r["swhid"] in train_ids]
    cand = [r for r in cand if r["swhid"] not in train_ids]
    cfg = CurateConfig()
    hasher = MinHasher(cfg.num_perm, cfg.ngram)
    sigs = hasher.signatures([r["content"] for r in train] + [r["content"] for r in cand])
    n = len(train)
    order = np.arange(len(sigs), dtype=np.int64)  # training files first: a mixed cluster keeps a training file
    res = near_clusters(sigs, np.zeros(len(sigs), dtype=np.int64), order, cfg.bands, cfg.rows, cfg.lsh_rounds,
                        cfg.verify_jaccard)
    near = [cand[i] for i in range(len(cand)) if res.keeper[n + i] < n]
    clean = [cand[i] for i in range(len(cand)) if res.keeper[n + i] >= n]
    random.Random(SEED).shuffle(clean)
    picked, total = [], 0
    for r in clean:
        if len(picked) >= sz["heldout_max_files"] or total + r["size"] > sz["heldout_max_bytes"]:
            continue
        picked.append(r)
        total += r["size"]
    if not picked:
        raise UserError(f"{curated_heldout}: no clean held-out Python file (raise heldout_bytes)")
    write_parquet(out / "data" / "part-00000.parquet", picked)
    langs: dict[str, int] = {}
    for r in picked:
        langs[r["language"]] = langs.get(r["language"], 0) + 1
    stats = {"candidates": len(cand) + len(exact), "exact_dup_of_train": len(exact), "near_dup_of_train": len(near),
             "clean": len(clean), "files": len(picked), "bytes": total,
             "repos": len({r["repo_name"] for r in picked}), "languages": langs}
    atomic_write_json(out / "stats.json", stats)
    return stats


def tokenizer_mix(out: Path, corpora: list[Path], per_corpus_bytes: int) -> Path:
    """A seeded sample of whole files, `per_corpus_bytes` from each corpus, shuffled together."""
    from domainfm.core.io import write_parquet

    dest = out / "data" / "part-00000.parquet"
    if dest.is_file():
        return out
    mix: list[dict[str, Any]] = []
    for c in corpora:
        rows = _rows(c, ["repo_name", "path", "content"])
        random.Random(SEED).shuffle(rows)
        total = 0
        for r in rows:
            if total >= per_corpus_bytes:
                break
            mix.append(r)
            total += len(r["content"].encode())
    random.Random(SEED + 1).shuffle(mix)
    write_parquet(dest, mix)
    return out


# ----------------------------------------------------------------------------------------- evaluation
def heldout_loss(model_dir: Path, tok_dir: Path, heldout: Path, seq_len: int, batch: int = 8) -> dict[str, Any]:
    """Sum of next-token NLL over every content token of every held-out file (each file after one
    `<|endoftext|>`, as files follow EOS in the packed stream), in windows of `seq_len` tokens that overlap by
    one token so every token is predicted exactly once with up to seq_len-1 tokens of context."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from domainfm.code.data.pack import load_tokenizer
    from domainfm.code.tokenizer.special import EOS

    tok = load_tokenizer(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    eos = tok.token_to_id(EOS)
    rows = _rows(heldout, ["content"])
    encs = tok.encode_batch([r["content"] for r in rows], add_special_tokens=False)
    windows: list[tuple[int, list[int]]] = []  # (file index, up to seq_len ids)
    for f, enc in enumerate(encs):
        ids = [eos, *enc.ids]
        windows += [(f, ids[s: s + seq_len]) for s in range(0, len(ids) - 1, seq_len - 1)]
    nll = np.zeros(len(rows))
    with torch.no_grad():
        for b in range(0, len(windows), batch):
            chunk = windows[b: b + batch]
            x = torch.full((len(chunk), seq_len), eos, dtype=torch.long)  # (B, L), right-padded
            y = torch.full((len(chunk), seq_len), -100, dtype=torch.long)  # labels; padding never scored
            for i, (_, w) in enumerate(chunk):
                x[i, : len(w)] = torch.tensor(w)
                y[i, : len(w)] = x[i, : len(w)]
            logits = model(input_ids=x).logits[:, :-1].float()  # (B, L-1, V) predicts positions 1..L-1
            tok_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y[:, 1:], reduction="none")  # (B, L-1)
            for i, (f, _) in enumerate(chunk):
                nll[f] += float(tok_nll[i].sum())
    per_file = [(nll[f], len(enc.ids), len(r["content"].encode())) for f, (r, enc) in enumerate(zip(rows, encs, strict=True))]
    a = np.array(per_file, dtype=np.float64)  # (files, [nll, tokens, bytes])
    return {"files": len(a), "tokens": int(a[:, 1].sum()), "bytes": int(a[:, 2].sum()),
            "loss": float(a[:, 0].sum() / a[:, 1].sum()), "bits_per_byte": float(a[:, 0].sum() / math.log(2) / a[:, 2].sum()),
            "per_file": a.tolist()}


def infill_em(model_dir: Path, out: Path, sz: dict[str, Any]) -> dict[str, Any]:
    """HumanEval single-line infilling, greedy, exact match (the task's own rule: the first generated line
    equals the canonical line, whitespace-stripped). `infill_limit` problems, evenly spaced over the 1,033."""
    from domainfm.code.evaluate.generation import GenParams, LocalBackend
    from domainfm.code.evaluate.harness import generate
    from domainfm.code.evaluate.tasks import get_task

    task = get_task("humaneval-fim-single-line")
    problems = task.load(None).problems
    stride = max(1, len(problems) // sz["infill_limit"])
    problems = problems[::stride][: sz["infill_limit"]]
    # stop at the newline: the task keeps only the first line, so this changes no score, only the time
    params = GenParams(n_samples=1, temperature=0.0, max_new_tokens=sz["max_new_tokens"], seed=SEED,
                       batch_size=8, stop=["\n"])
    out.mkdir(parents=True, exist_ok=True)
    rows = generate(task, problems, LocalBackend(str(model_dir)), params, out)
    by_id = {p.task_id: p for p in problems}
    hits = [bool(task.exact_match(by_id[r["task_id"]], r["completion"])) for r in rows]
    return {"problems": len(problems), "of": 1033, "exact_match": sum(hits) / len(hits), "hits": sum(hits),
            "per_problem": hits}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, c - h), min(1.0, c + h))


def paired_bootstrap(a: list[list[float]], b: list[list[float]], n: int = 2000) -> tuple[float, float]:
    """95% interval of bits/byte(raw) - bits/byte(curated), resampling held-out files (paired)."""
    import numpy as np

    x, y = np.array(a), np.array(b)  # (files, [nll, tokens, bytes])
    rng = np.random.Generator(np.random.PCG64(SEED))
    idx = rng.integers(0, len(x), size=(n, len(x)))
    d = (x[idx, 0].sum(1) - y[idx, 0].sum(1)) / math.log(2) / x[idx, 2].sum(1)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------- the run
def run(out: Path, sz: dict[str, Any], workers: int) -> dict[str, Any]:
    from domainfm.code.data.pack import pack_corpus
    from domainfm.code.tokenizer import train_tokenizer
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import pretrain
    from domainfm.core.io import atomic_write_json

    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = round(time.perf_counter() - t_stage[0], 1)
        print(f"[thesis_code] {name}: {timings[name]:.0f}s", flush=True)
        t_stage[0] = time.perf_counter()

    t_stage = [time.perf_counter()]
    out.mkdir(parents=True, exist_ok=True)
    repos = _done(out / "repos.json")
    if repos is None:
        repos = select_repos(sz)
        atomic_write_json(out / "repos.json", repos)
    stage("select")
    train_specs, held_specs = _specs(repos["train"]), _specs(repos["heldout"])
    curated = curate_corpus(out / "curated", train_specs, workers)
    stage("curate")
    raw = raw_corpus(out / "raw", train_specs, 1_000_000)
    stage("raw")
    curate_corpus(out / "heldout_curated", held_specs, workers)
    held = heldout_set(out / "heldout", out / "heldout_curated", out / "raw", sz)
    stage("heldout")
    tok = out / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        mix = tokenizer_mix(out / "tokenizer_mix", [out / "raw", out / "curated"], sz["tok_bytes"] // 2)
        train_tokenizer(mix, tok, vocab_size=sz["vocab"], overwrite=True)
    stage("tokenizer")
    arms: dict[str, dict[str, Any]] = {}
    for arm in ("raw", "curated"):
        index = pack_corpus(out / arm, tok, out / f"packed_{arm}", seq_len=sz["seq_len"], fim_rate=0.5, seed=SEED,
                            val_fraction=0.0, workers=workers)
        stage(f"pack_{arm}")
        summary = _done(out / f"train_{arm}" / "final" / "training_summary.json")
        if summary is None:
            cfg = PretrainConfig(data=str(out / f"packed_{arm}"), out=str(out / f"train_{arm}"), preset=sz["preset"],
                                 batch_size=sz["batch"], max_steps=sz["steps"], lr=sz["lr"],
                                 warmup=max(2, sz["steps"] // 20), eval_every=0, save_every=max(5, sz["steps"] // 5),
                                 seed=SEED, tensorboard=False, device="cpu")
            summary = pretrain(cfg)
        stage(f"train_{arm}")
        final = out / f"train_{arm}" / "final"
        ev = out / f"eval_{arm}"
        loss = _done(ev / "heldout_loss.json")
        if loss is None:
            loss = heldout_loss(final, tok, out / "heldout", sz["seq_len"])
            atomic_write_json(ev / "heldout_loss.json", loss)
        stage(f"heldout_loss_{arm}")
        em = _done(ev / "infill.json")
        if em is None:
            em = infill_em(final, ev / "infill", sz)
            atomic_write_json(ev / "infill.json", em)
        stage(f"infill_{arm}")
        arms[arm] = {"corpus": {"files": (curated if arm == "curated" else raw)["files_out"],
                                "bytes": (curated if arm == "curated" else raw)["bytes_out"]},
                     "train_sequences": index["splits"]["train"]["n_seqs"],
                     "train_tokens": index["splits"]["train"]["n_seqs"] * sz["seq_len"],
                     "tokens_seen": summary["tokens_seen"], "steps": summary["steps"],
                     "epochs": summary["epochs"], "final_train_loss": summary["final_loss"],
                     "heldout_loss": loss["loss"], "heldout_bits_per_byte": loss["bits_per_byte"],
                     "infill_exact_match": em["exact_match"], "infill_hits": em["hits"],
                     "infill_problems": em["problems"], "infill_ci95": wilson(em["hits"], em["problems"])}
    lr = _done(out / "eval_raw" / "heldout_loss.json")
    lc = _done(out / "eval_curated" / "heldout_loss.json")
    result = {
        "sizes": sz, "seed": SEED, "repos": {"train": len(repos["train"]), "heldout": len(repos["heldout"]),
                                              "listed_bytes": repos["bytes"]},
        "curated_funnel": curated.get("funnel"), "raw_dropped": raw["dropped"], "heldout": held, "arms": arms,
        "delta_bits_per_byte_raw_minus_curated": arms["raw"]["heldout_bits_per_byte"]
        - arms["curated"]["heldout_bits_per_byte"],
        "delta_bits_per_byte_ci95": paired_bootstrap(lr["per_file"], lc["per_file"]),
        "seeds_expect": "curated < raw in held-out loss and curated >= raw in infilling exact match "
                        "(StarCoder / StarCoder2: near-dedup and filtering improve downstream results)",
        "timings_s": timings,
    }
    atomic_write_json(out / "summary.json", result)
    return result


def table(r: dict[str, Any]) -> str:
    a, b = r["arms"]["raw"], r["arms"]["curated"]

    def row(label: str, f: Any) -> str:
        return f"| {label} | {f(a)} | {f(b)} |"

    lines = ["| | raw | curated |", "|---|---|---|",
             row("training corpus (files / MB)", lambda x: f"{x['corpus']['files']:,} / {x['corpus']['bytes'] / 1e6:.2f}"),
             row("packed training tokens", lambda x: f"{x['train_tokens']:,}"),
             row("tokens seen (steps)", lambda x: f"{x['tokens_seen']:,} ({x['steps']})"),
             row("epochs over its corpus", lambda x: f"{x['epochs']:.2f}"),
             row("final train loss", lambda x: f"{x['final_train_loss']:.3f}"),
             row("held-out loss (nats/token)", lambda x: f"{x['heldout_loss']:.3f}"),
             row("held-out bits/byte", lambda x: f"{x['heldout_bits_per_byte']:.3f}"),
             row("HumanEval 1-line infill EM", lambda x: f"{x['infill_exact_match']:.3f} ({x['infill_hits']}/"
                 f"{x['infill_problems']}; 95% CI {x['infill_ci95'][0]:.3f}-{x['infill_ci95'][1]:.3f})")]
    lo, hi = r["delta_bits_per_byte_ci95"]
    h = r["heldout"]
    lines += ["", f"held-out: {h['files']} files / {h['bytes']:,} bytes from {h['repos']} repositories "
              f"({h['exact_dup_of_train']} exact and {h['near_dup_of_train']} near duplicates of raw training files "
              "removed); bits/byte raw - curated = "
              f"{r['delta_bits_per_byte_raw_minus_curated']:+.4f} (paired bootstrap 95% CI {lo:+.4f} .. {hi:+.4f})",
              f"the seeds expect: {r['seeds_expect']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default="runs/thesis_code")
    ap.add_argument("--smoke", action="store_true", help="a 1-2 minute path on tiny sizes (the test)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="override the optimizer steps of both arms")
    args = ap.parse_args(argv)
    if not os.environ.get("DOMAINFM_DATA"):
        print("error: set DOMAINFM_DATA (HumanEval-infilling and the decontamination lists are read from it)",
              file=sys.stderr)
        return 2
    sz = dict(SIZES["smoke" if args.smoke else "default"])
    if args.steps:
        sz["steps"] = args.steps
    from domainfm.core.errors import UserError

    try:
        r = run(Path(args.out), sz, args.workers)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
