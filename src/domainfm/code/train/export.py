"""The final model folder: `save_pretrained` weights + the tokenizer + a model card (README.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError
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
                 summary: dict[str, Any], state_dict: dict[str, Any] | None = None,
                 weights_from: Path | None = None, dest: Path | None = None,
                 max_shard_bytes: int | None = None) -> Path:
    """Write OUT/final (or `dest`) atomically (temporary folder + rename); returns its path.

    `weights_from`: a sharded (DCP) checkpoint folder whose weights are streamed into the safetensors
    files (`dcp_export`; `model` may then live on `meta`) instead of `save_pretrained`'s in-memory ones.
    """
    final = dest or out_dir / "final"
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = tokenizer_dir(index, packed_dir)
    if tok is not None:
        _set_special_ids(model, tok)
    use_cache = model.config.use_cache
    model.config.use_cache = True  # training turns the KV cache off; generation wants it back
    if weights_from is None:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    else:
        _save_streamed(model, tmp, weights_from, max_shard_bytes)
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


def _save_streamed(model: Any, tmp: Path, ckpt: Path, max_shard_bytes: int | None) -> None:
    """What `save_pretrained` writes (config.json, generation_config.json, safetensors weights), with the
    weights read tensor group by tensor group from the DCP folder `ckpt`."""
    from domainfm.code.train.dcp_export import (
        DEFAULT_SHARD_BYTES,
        checkpoint_tensors,
        export_names,
        write_safetensors,
    )

    tmp.mkdir(parents=True)
    names = export_names(model)
    meta = checkpoint_tensors(ckpt)
    # as save_pretrained records them: the weights' dtype ("float32") and the class name
    model.config.dtype = str(meta[names[0]].properties.dtype if names[0] in meta else model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(tmp)
    if model.can_generate() and model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    write_safetensors(ckpt, tmp, names, max_shard_bytes or DEFAULT_SHARD_BYTES)


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


def export_checkpoint(ckpt: Path, dest: Path | None = None, max_shard_mb: float = 2048.0) -> Path:
    """`domainfm code export-checkpoint`: a transformers folder from a sharded (DCP) checkpoint, offline.

    `ckpt`: a run folder (its newest checkpoint) or one ``checkpoints/step_*`` folder; `dest` defaults
    to RUN/final. Streams the weights (`dcp_export`); the tokenizer and model card come from the packed
    data the run names, when it is still reachable.
    """
    import torch
    from transformers import AutoConfig

    from domainfm.code.data.shards import read_index
    from domainfm.code.model.build import build_model
    from domainfm.code.train.checkpoint import latest_checkpoint
    from domainfm.code.train.metrics import read_metrics

    ckpt = Path(ckpt)
    if not (ckpt / ".metadata").is_file():
        found = latest_checkpoint(ckpt)
        if found is None or not (found / ".metadata").is_file():
            raise UserError(f"{ckpt}: not a sharded checkpoint (no .metadata) nor a run folder holding one; "
                            "a run with full (state.pt) checkpoints already wrote its final/")
        ckpt = found
    if max_shard_mb <= 0:
        raise UserError(f"max_shard_mb must be positive, got {max_shard_mb}")
    run = ckpt.parent.parent
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
    cfg, step, world = state["config"], int(state["step"]), int(state.get("world_size", 1))
    mjson = json.loads((ckpt / "model_config.json").read_text())
    model = build_model(AutoConfig.for_model(**mjson), device="meta")  # config and names only, no memory
    packed = Path(cfg.get("data", ""))
    try:
        index = read_index(packed)
    except (UserError, OSError, ValueError):  # the packed data may be gone: export the weights anyway
        log.warning("%s: packed data %s not readable; no tokenizer files / data card in the export", ckpt, packed)
        index = {}
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("step", 0) <= step]
    vals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    seq_len = int(cfg.get("seq_len") or index.get("seq_len") or 0)
    seen = step * int(cfg["batch_size"]) * int(cfg["grad_accum"]) * world
    n_train = index.get("splits", {}).get("train", {}).get("n_seqs") or 0
    summary = {"steps": step, "tokens_seen": seen * seq_len, "sequences_seen": seen,
               "epochs": seen / n_train if n_train else 0.0,
               "final_loss": rows[-1]["loss"] if rows else None, "final_val_loss": vals[-1] if vals else None,
               "world_size": world, "parallelism": "FSDP" if cfg.get("fsdp") else "DDP" if world > 1 else
               "single process", "device": "n/a (exported from checkpoint)", "precision": cfg.get("dtype", "auto"),
               "wall_s": float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0, "out": str(run),
               "checkpoint": str(ckpt)}
    return export_final(model, run, packed_dir=packed, index=index, cfg=cfg, summary=summary, weights_from=ckpt,
                        dest=Path(dest) if dest else None, max_shard_bytes=int(max_shard_mb * 1024**2))
