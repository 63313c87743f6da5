"""The final model folder: `save_pretrained` weights + the tokenizer + a model card (README.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from domainfm.core.progress import get_logger

log = get_logger("code.train")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json")


def tokenizer_dir(index: dict[str, Any], packed_dir: Path) -> Path | None:
    """The tokenizer folder the packed index records (absolute, or relative to the packed folder)."""
    tok = index.get("tokenizer")
    if isinstance(tok, dict):
        tok = tok.get("path") or tok.get("dir")
    if not tok:
        return None
    p = Path(tok)
    for cand in (p, packed_dir / p):
        if (cand / "tokenizer.json").is_file() or (cand / "tokenizer_config.json").is_file():
            return cand
    return None


def corpus_stats(index: dict[str, Any], packed_dir: Path, tok_dir: Path | None) -> tuple[Path | None, dict | None]:
    """The curation stats.json of the corpus behind the packed data, when it can be found."""
    cands: list[Any] = [index.get(k) for k in ("corpus", "corpus_dir", "source", "curated")]
    plan = packed_dir / "_work" / "plan.json"  # `domainfm code pack` records the corpus shards it read there
    if plan.is_file():
        try:
            cands.append(json.loads(plan.read_text()).get("settings", {}).get("corpus"))
        except json.JSONDecodeError:
            pass
    # a list of corpus shards ([path, size] pairs or paths): the corpus is CURATED_DIR/data/*.parquet
    cands = [str(Path(c[0][0] if isinstance(c[0], list) else c[0]).parent.parent) if isinstance(c, list) and c
             else c for c in cands]
    if tok_dir is not None:
        for meta in ("training_args.json", "domainfm_tokenizer.json", "train_meta.json"):
            if (tok_dir / meta).is_file():
                try:
                    m = json.loads((tok_dir / meta).read_text())
                    cands += [m.get(k) for k in ("corpus", "corpus_dir", "source")]
                except (json.JSONDecodeError, AttributeError):
                    pass
    for c in cands:
        if isinstance(c, str) and c:
            for base in (Path(c), packed_dir / c):
                if (base / "stats.json").is_file():
                    try:
                        return base, json.loads((base / "stats.json").read_text())
                    except json.JSONDecodeError:
                        return base, None
    return None, None


def export_final(model: Any, out_dir: Path, *, packed_dir: Path, index: dict[str, Any], cfg: dict[str, Any],
                 summary: dict[str, Any], state_dict: dict[str, Any] | None = None) -> Path:
    """Write OUT/final atomically (temporary folder + rename); returns its path."""
    final = out_dir / "final"
    tmp = out_dir / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = tokenizer_dir(index, packed_dir)
    if tok is not None:
        _set_special_ids(model, tok)
    use_cache = model.config.use_cache
    model.config.use_cache = True  # training turns the KV cache off; generation wants it back
    model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    model.config.use_cache = use_cache
    if tok is not None:
        for name in TOKENIZER_FILES:
            if (tok / name).is_file():
                shutil.copy2(tok / name, tmp / name)
    else:
        log.warning("the packed index names no readable tokenizer folder; %s has no tokenizer files", final)
    corpus, stats = corpus_stats(index, packed_dir, tok)
    (tmp / "README.md").write_text(model_card(model, cfg, summary, index, packed_dir, tok, corpus, stats))
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _set_special_ids(model: Any, tok: Path) -> None:
    """bos/eos/pad ids from the tokenizer (`<|endoftext|>`), so generation stops where training ended docs."""
    try:
        data = json.loads((tok / "tokenizer.json").read_text())
        vocab = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return
    eos = vocab.get("<|endoftext|>")
    if eos is None:
        return
    for c in (model.config, getattr(model, "generation_config", None)):
        if c is not None:
            c.bos_token_id = c.eos_token_id = eos
            c.pad_token_id = eos


def model_card(model: Any, cfg: dict[str, Any], summary: dict[str, Any], index: dict[str, Any],
               packed_dir: Path, tok: Path | None, corpus: Path | None, stats: dict | None) -> str:
    from domainfm.code.model.build import count_params

    n = count_params(model)
    splits = index.get("splits", {})
    train, val = splits.get("train", {}), splits.get("val", {})
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- code",
        f"- {model.config.model_type}", "- domainfm", "---", "",
        f"# {model.config.model_type} `{cfg.get('preset')}` trained with domainfm", "",
        f"A {type(model).__name__} of {n:,} parameters ({model.config.num_hidden_layers} layers, hidden "
        f"{model.config.hidden_size}, vocabulary {model.config.vocab_size}) pretrained from scratch with "
        "`domainfm code pretrain` (next-token prediction on repository-context samples with "
        f"fill-in-the-middle, FIM rate {index.get('fim_rate', 'n/a')}).", "",
        "## Data", "",
        f"- packed data: `{packed_dir}` — {train.get('n_seqs', '?')} train sequences "
        f"({train.get('n_tokens', '?')} tokens), {val.get('n_seqs', 0)} validation sequences held out by "
        f"repository; sequence length {index.get('seq_len')}.",
        f"- tokenizer: `{tok}`" if tok else "- tokenizer: not recorded in the packed index",
    ]
    if corpus is not None:
        lines.append(f"- curated corpus: `{corpus}`")
    if stats:
        lines += ["", "Curation statistics (`stats.json`):", "", "```json",
                  json.dumps(_short_stats(stats), indent=2), "```"]
    elif corpus is None:
        lines.append("- curated corpus: not reachable from the packed index (no stats.json found)")
    lines += [
        "", "## Training", "",
        f"- tokens seen: {summary['tokens_seen']:,} over {summary['steps']} optimizer steps "
        f"({summary['sequences_seen']:,} sequences, {summary['epochs']:.2f} epochs)",
        f"- final train loss: {_fmt(summary.get('final_loss'))}; final validation loss: "
        f"{_fmt(summary.get('final_val_loss'))} (nats/token)",
        f"- processes: {summary['world_size']} ({summary['parallelism']}), device {summary['device']}, "
        f"precision {summary['precision']}, wall time {summary['wall_s']:.0f}s",
        "", "Configuration:", "", "```yaml",
        *[f"{k}: {v}" for k, v in cfg.items()], "```", "",
        "## Use", "", "```python", "from transformers import pipeline",
        "pipe = pipeline('text-generation', model='PATH/TO/final')",
        "print(pipe('def fibonacci(n):', max_new_tokens=32)[0]['generated_text'])", "```", "",
        "FIM: `<fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>` then generate the middle "
        "(`domainfm code generate final --prefix ... --suffix ...`).", "",
    ]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "n/a"


def _short_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Top-level scalars and small mappings only (a stats.json can list every file)."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, int | float | str | bool) or v is None:
            out[k] = v
        elif isinstance(v, dict) and len(v) <= 20 and all(not isinstance(x, dict | list) for x in v.values()):
            out[k] = v
    return out
