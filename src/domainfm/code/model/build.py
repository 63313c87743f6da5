"""Build a transformers causal LM from a preset name or a config, on any device (``meta`` included)."""

from __future__ import annotations

import copy
from typing import Any

from domainfm.code.model.presets import PRESETS
from domainfm.core.errors import UserError


def model_config(preset_or_config: Any, vocab_size: int | None = None, **overrides: Any) -> Any:
    """The transformers config of a preset name (or a copy of a given config), with overrides applied.

    `vocab_size` resizes the embedding to the tokenizer's vocabulary (the presets use StarCoder2's 49152).
    """
    if isinstance(preset_or_config, str):
        cfg = PRESETS.get(preset_or_config)()
    else:
        cfg = copy.deepcopy(preset_or_config)
    if vocab_size is not None:
        if vocab_size <= 0:
            raise UserError(f"vocab_size must be positive, got {vocab_size}")
        cfg.vocab_size = int(vocab_size)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise UserError(f"{type(cfg).__name__} has no field {key!r}")
        setattr(cfg, key, value)
    return cfg


def build_model(preset_or_config: Any, vocab_size: int | None = None, device: Any = "cpu",
                dtype: Any = None, attn_implementation: str | None = "sdpa", **overrides: Any) -> Any:
    """A freshly initialised `Starcoder2ForCausalLM` / `GPTBigCodeForCausalLM`.

    On ``device="meta"`` no memory is allocated (parameter counts of the 15B presets take milliseconds);
    otherwise the weights are initialised by transformers' own `_init_weights` directly on `device`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config(preset_or_config, vocab_size, **overrides)
    if attn_implementation is not None:
        cfg._attn_implementation = attn_implementation
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
    return model


def count_params(model: Any, exclude_embeddings: bool = False) -> int:
    """Number of distinct parameters (tied weights once); optionally without the input/position embeddings."""
    seen: set[int] = set()
    total = 0
    skip: set[int] = set()
    if exclude_embeddings:
        emb = model.get_input_embeddings()
        skip.add(id(emb.weight))
        for name, mod in model.named_modules():  # GPTBigCode's learned positions
            if name.endswith("wpe"):
                skip.add(id(mod.weight))
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) not in skip:
            total += p.numel()
    return total


def flops_params(model: Any) -> int:
    """Parameters that take part in a matmul per token (the N of the 6N FLOPs/token rule).

    All parameters but the lookup tables: the input embedding is a lookup unless it is tied to the LM
    head (then its matmul is the head's), and learned positions are always a lookup.
    """
    n = count_params(model)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight is not emb:
        n -= emb.numel()
    for name, mod in model.named_modules():
        if name.endswith("wpe"):
            n -= mod.weight.numel()
    return n


def param_summary(preset: str, vocab_size: int | None = None) -> dict[str, Any]:
    """Parameter counts of a preset, computed on the meta device (fast, no memory)."""
    model = build_model(preset, vocab_size=vocab_size, device="meta")
    cfg = model.config
    return {
        "preset": preset,
        "architecture": type(model).__name__,
        "params": count_params(model),
        "non_embedding_params": count_params(model, exclude_embeddings=True),
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden": getattr(cfg, "hidden_size", None),
        "vocab": cfg.vocab_size,
        "context": getattr(cfg, "max_position_embeddings", None),
    }
