"""Demo stage: tokenizer -> pack -> pretrain `tiny` -> loss curve -> one completion and one infill.

Reads `ctx.state["corpus"]` (the curation stage's output); sets `ctx.state["tokenizer"]`,
`ctx.state["packed"]` and `ctx.state["model"]` (the exported `final/` folder) for the evaluation stage.
Budget: about 4 minutes on 2 cores (`ctx.quick`: well under a minute). Every step resumes: rerunning
the demo reuses the tokenizer and the pack and continues training from the last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domainfm.core.demo import DemoContext
from domainfm.core.errors import UserError

# (vocab, seq_len, batch, steps, corpus bytes packed): sized so the stage fits its budget on 2 cores
FULL = {"vocab": 4096, "seq_len": 256, "batch": 8, "steps": 60, "max_bytes": 6_000_000, "tok_bytes": 3_000_000}
QUICK = {"vocab": 1024, "seq_len": 128, "batch": 4, "steps": 12, "max_bytes": 400_000, "tok_bytes": 300_000}


def _subset_corpus(corpus: Path, out: Path, max_bytes: int) -> Path:
    """The first whole repositories of the corpus up to `max_bytes` of code (the demo's training budget).

    Whole repositories are kept so the packed samples still carry repository context; the corpus'
    stats.json is copied along (the model card reports it).
    """
    from domainfm.code.data.corpus import corpus_shards
    from domainfm.core.io import read_parquet_rows, write_parquet

    if (out / "data" / "00000.parquet").is_file():
        return out
    files = corpus_shards(corpus)
    by_repo: dict[str, list[dict[str, Any]]] = {}
    total = 0
    for row in read_parquet_rows(files):
        repo = row.get("repo_name") or ""
        if repo not in by_repo and total >= max_bytes:
            continue  # keep finishing the repositories already taken, start no new one
        by_repo.setdefault(repo, []).append(row)
        total += len((row.get("content") or "").encode("utf-8", "replace"))
        if total >= 2 * max_bytes:
            break
    rows = [r for rs in by_repo.values() for r in rs]
    if not rows:
        raise UserError(f"{corpus}: the curated corpus has no rows to train on")
    write_parquet(out / "data" / "00000.parquet", rows)
    if (corpus / "stats.json").is_file():
        stats = json.loads((corpus / "stats.json").read_text())
        stats = {"demo_subset": {"source": str(corpus), "repos": len(by_repo), "files": len(rows), "bytes": total},
                 **stats}
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return out


def run(ctx: DemoContext) -> None:
    from domainfm.code.data.pack import pack_corpus
    from domainfm.code.generate import GenerationConfig, Generator
    from domainfm.code.tokenizer import train_tokenizer
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import pretrain

    corpus = ctx.state.get("corpus")
    if not corpus or not Path(corpus).is_dir():
        raise UserError("the pretraining demo needs the curated corpus (ctx.state['corpus']) written by the "
                        "curation stage; run the whole code demo (`domainfm demo code`)")
    p = QUICK if ctx.quick else FULL
    root = Path(ctx.out) / "code" / "train"
    root.mkdir(parents=True, exist_ok=True)

    sub = _subset_corpus(Path(corpus), root / "corpus", p["max_bytes"])
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        train_tokenizer(sub, tok, vocab_size=p["vocab"], max_bytes=p["tok_bytes"])
    print(f"  tokenizer: {tok} (vocab {p['vocab']})")
    index = pack_corpus(sub, tok, root / "packed", seq_len=p["seq_len"], fim_rate=0.5, seed=0,
                        val_fraction=0.1, workers=max(1, ctx.workers))
    tr, va = index["splits"]["train"], index["splits"]["val"]
    print(f"  packed: {tr['n_seqs']} train / {va['n_seqs']} val sequences of {p['seq_len']} tokens "
          f"({tr['n_repos']} / {va['n_repos']} repositories)")

    cfg = PretrainConfig(data=str(root / "packed"), out=str(root / "pretrain"), preset="tiny",
                         batch_size=p["batch"], max_steps=p["steps"], lr=2e-3, warmup=max(2, p["steps"] // 20),
                         eval_every=max(5, p["steps"] // 6), eval_batches=4, save_every=max(5, p["steps"] // 4),
                         seed=0)
    summary = pretrain(cfg)
    print(f"  pretrained tiny: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, "
          f"loss {summary['final_loss']:.3f}, val loss {summary['final_val_loss'] or float('nan'):.3f}, "
          f"{summary['wall_s']:.0f}s")
    print(f"  loss curve: {summary['loss_png']}")
    final = Path(summary["final"])

    gen = Generator(final)
    gcfg = GenerationConfig(max_new_tokens=48 if not ctx.quick else 16, temperature=0.0)
    prompt = "def read_config(path):\n    "
    completion = gen.complete([prompt], gcfg)[0][0]
    prefix, suffix = "def add(a, b):\n    ", "\n    return result\n"
    middle = gen.infill([prefix], [suffix], gcfg)[0][0]
    print("  completion:\n" + _indent(prompt + "\u2588" + completion))
    print("  infill (middle marked):\n" + _indent(prefix + "\u2588" + middle + "\u2588" + suffix))
    from domainfm.core.io import write_jsonl

    gens = root / "generations.jsonl"  # what the attribution stage traces back to the training files
    write_jsonl(gens, [{"id": "completion", "prompt": prompt, "completions": [completion]},
                       {"id": "infill", "prefix": prefix, "suffix": suffix, "completions": [middle]}])
    ctx.state.update(model=str(final), tokenizer=str(tok), packed=str(root / "packed"), generations=str(gens))


def _indent(text: str, pad: str = "    | ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
