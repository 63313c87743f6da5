"""Train a StarCoder2-style byte-level BPE tokenizer on a curated corpus, streamed shard by shard.

Design (the choices StarCoder2 made, and why):
- no normalizer: source code must round-trip byte for byte (NFC/NFKC would rewrite identifiers);
- pre-tokenizer = individual digits, then the GPT-2 regex on the byte-level alphabet: numbers never
  merge into multi-digit tokens (helps arithmetic), and every byte has a symbol so nothing is ever
  unknown;
- the special tokens come first in the vocabulary (ids 0..37, see `special.py`);
- saved as a standard Hugging Face folder (`tokenizer.json`, `tokenizer_config.json`,
  `special_tokens_map.json`) with `<|endoftext|>` as bos/eos/unk/pad, like StarCoder2, and
  `clean_up_tokenization_spaces=False` so `decode(encode(x)) == x` holds for any text.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domainfm.code.tokenizer.special import EOS, PII_TOKENS, SPECIAL_TOKENS, STARCODER2_SPECIAL_TOKENS
from domainfm.core.errors import UserError, require
from domainfm.core.io import atomic_write_json
from domainfm.core.progress import get_logger, progress

log = get_logger("tokenizer")


def build_empty_tokenizer() -> Any:
    """An untrained tokenizer with the StarCoder2 pipeline (BPE model, digits + ByteLevel, ByteLevel decoder)."""
    tk = require("tokenizers", "code")
    from tokenizers import decoders, models, pre_tokenizers, processors

    tok = tk.Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _texts(files: list[Path], max_bytes: int | None, stats: dict[str, int], bar: Any = None) -> Iterator[str]:
    """Stream file contents (via `read_parquet_rows`), stopping after `max_bytes` of text if given."""
    from domainfm.core.io import read_parquet_rows

    for row in read_parquet_rows(files, columns=["content"], batch_size=256):
        text = row["content"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{stats['bytes'] / 2**20:.1f} MiB", refresh=False)
        if not text:
            stats["empty"] += 1
            continue
        stats["docs"] += 1
        stats["bytes"] += len(text.encode("utf-8", "surrogatepass"))
        yield text
        if max_bytes is not None and stats["bytes"] >= max_bytes:
            return


def _mark_pii_tokens_non_special(tokenizer_json: dict[str, Any]) -> None:
    """The PII placeholders stay single tokens but are not 'special': `skip_special_tokens` keeps them,
    and packing (which splits special-token look-alikes in source text) still recognises them."""
    for tok in tokenizer_json["added_tokens"]:
        if tok["content"] in PII_TOKENS:
            tok["special"] = False


def train_tokenizer(corpus_dir: str | Path, out_dir: str | Path, vocab_size: int = 49152,
                    min_frequency: int = 2, max_bytes: int | None = None,
                    model_max_length: int = 16384, overwrite: bool = False) -> Path:
    """Train the tokenizer on `corpus_dir` (a curated corpus) and save it to `out_dir`; returns `out_dir`.

    `max_bytes` caps how much text is read (the first shards, in order), for quick runs.
    """
    from domainfm.code.data.corpus import corpus_shards, count_rows

    tk = require("tokenizers", "code")
    transformers = require("transformers", "code")
    out = Path(out_dir)
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise UserError(f"--vocab-size {vocab_size} is too small: need at least "
                        f"{len(SPECIAL_TOKENS) + 256} (special tokens + the 256 byte symbols)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        if (out / "tokenizer.json").is_file():
            raise UserError(f"{out} already holds a tokenizer; pass --overwrite to replace it")
        raise UserError(f"{out} exists and is not empty")
    files = corpus_shards(corpus_dir)
    n_rows = count_rows(files)
    t0 = time.perf_counter()

    tok = build_empty_tokenizer()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )
    stats = {"docs": 0, "empty": 0, "bytes": 0}
    bar = progress(total=n_rows, desc="tokenizer: reading corpus", unit="file")

    tok.train_from_iterator(_texts(files, max_bytes, stats, bar), trainer=trainer, length=n_rows)
    bar.close()
    if stats["docs"] == 0:
        raise UserError(f"{corpus_dir}: the corpus has no non-empty file to train on")

    # fix the added-token flags, then wrap as a transformers fast tokenizer and save the standard folder
    data = json.loads(tok.to_str())
    _mark_pii_tokens_non_special(data)
    tok = tk.Tokenizer.from_str(json.dumps(data))
    for i, t in enumerate(SPECIAL_TOKENS):  # the contract: SPECIAL_TOKENS[i] has id i
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"special token {t} got id {tok.token_to_id(t)}, expected {i}")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
        additional_special_tokens=STARCODER2_SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False, model_max_length=model_max_length,
    )
    if out.exists() and overwrite:
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(str(tmp))
    # portable across transformers 4 and 5: the generic fast class, specials under the v4 key (v5 reads it too)
    cfg_path = tmp / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("extra_special_tokens", None)
    cfg["additional_special_tokens"] = STARCODER2_SPECIAL_TOKENS[1:]
    atomic_write_json(cfg_path, cfg)
    # transformers >= 5 folds this file into tokenizer_config.json; older tools still read it
    atomic_write_json(tmp / "special_tokens_map.json", {
        "bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
        "additional_special_tokens": STARCODER2_SPECIAL_TOKENS[1:]})
    secs = time.perf_counter() - t0
    atomic_write_json(tmp / "training_stats.json", {
        "corpus": str(Path(corpus_dir).resolve()), "vocab_size": tok.get_vocab_size(),
        "requested_vocab_size": vocab_size, "min_frequency": min_frequency, "files_read": stats["docs"],
        "empty_files_skipped": stats["empty"], "bytes_read": stats["bytes"], "max_bytes": max_bytes,
        "seconds": round(secs, 2),
    })
    tmp.rename(out)  # the folder appears complete or not at all
    log.info("tokenizer: %d files, %.1f MiB, vocab %d, %.1fs -> %s", stats["docs"], stats["bytes"] / 2**20,
             tok.get_vocab_size(), secs, out)
    return out
