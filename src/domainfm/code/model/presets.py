"""Model presets: StarCoder2 (3B/7B/15B), StarCoder 1 (15.5B) and two small CPU-sized StarCoder2s.

Every preset is a function returning a transformers config (`Starcoder2Config` / `GPTBigCodeConfig`);
the model itself is always transformers' own class, so a saved model loads anywhere in the Hugging
Face ecosystem. Figures follow the published checkpoints (bigcode/starcoder2-{3b,7b,15b},
bigcode/starcoder): every field of their config.json (initializer_range, rope_theta, sliding_window,
max_position_embeddings, sizes; tests/code/model/test_presets.py compares them) except dropout, which
we set to 0 (below); the 3B and 7B tie the input embedding and the LM head, the 15B does not.

transformers is imported inside the functions so `import domainfm.cli` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domainfm.core.registry import Registry

# name -> () -> transformers.PretrainedConfig
PRESETS: Registry[Callable[[], Any]] = Registry("model preset")

# the published sizes the presets must reproduce (parameters), checked by tests/code/model/test_presets.py
PUBLISHED_PARAMS = {
    "starcoder2-3b": 3.03e9,   # huggingface.co/bigcode/starcoder2-3b: "3.03B params"
    "starcoder2-7b": 7.17e9,   # huggingface.co/bigcode/starcoder2-7b: "7.17B params"
    "starcoder2-15b": 15.96e9,  # huggingface.co/bigcode/starcoder2-15b: "16B params" (15.96B)
    "starcoder-15b": 15.5e9,   # huggingface.co/bigcode/starcoder: "a 15.5B parameter model"
}

STARCODER2_VOCAB = 49152


def _starcoder2(*, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, rope_theta: float,
                tie: bool, context: int = 16384, window: int | None = 4096, init_std: float = 0.02,
                vocab: int = STARCODER2_VOCAB) -> Any:
    from transformers import Starcoder2Config

    # StarCoder2 = GQA + RoPE + sliding-window attention, LayerNorm with biases, GELU (tanh) MLP
    # without gating; dropout 0 (pretraining on deduplicated data does not use it, and it keeps
    # the loss a deterministic function of the weights, which exact resume relies on).
    # `init_std` (initializer_range) is the published one per size: 0.018042 = 1/sqrt(3072) for the 3B
    # (the 7B publishes the same value), 0.01275 ~ 1/sqrt(6144) for the 15B; 0.02 for our own sizes.
    return Starcoder2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, hidden_act="gelu_pytorch_tanh",
        max_position_embeddings=context, sliding_window=window, rope_theta=rope_theta,
        norm_epsilon=1e-5, use_bias=True, initializer_range=init_std, tie_word_embeddings=tie,
        residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0,
        bos_token_id=0, eos_token_id=0, use_cache=True,
    )


@PRESETS.register("starcoder2-3b")
def starcoder2_3b() -> Any:
    """StarCoder2-3B: 30 layers, hidden 3072, 24 heads / 2 KV heads, FFN 12288 (3.03B params)."""
    return _starcoder2(layers=30, hidden=3072, heads=24, kv_heads=2, ffn=12288,
                       rope_theta=999999.4420358813, tie=True, init_std=0.018042)


@PRESETS.register("starcoder2-7b")
def starcoder2_7b() -> Any:
    """StarCoder2-7B: 32 layers, hidden 4608, 36 heads / 4 KV heads, FFN 18432 (7.17B params)."""
    return _starcoder2(layers=32, hidden=4608, heads=36, kv_heads=4, ffn=18432, rope_theta=1e6, tie=True,
                       init_std=0.018042)


@PRESETS.register("starcoder2-15b")
def starcoder2_15b() -> Any:
    """StarCoder2-15B: 40 layers, hidden 6144, 48 heads / 4 KV heads, FFN 24576 (15.96B params)."""
    return _starcoder2(layers=40, hidden=6144, heads=48, kv_heads=4, ffn=24576, rope_theta=1e5, tie=False,
                       init_std=0.01275)


@PRESETS.register("starcoder-15b")
def starcoder_15b() -> Any:
    """StarCoder (1) 15.5B, GPTBigCode: 40 layers, hidden 6144, 48 heads, multi-query attention, 8K context."""
    from transformers import GPTBigCodeConfig

    # learned absolute positions (n_positions), one shared K/V head (multi_query), FFN = 4 x hidden
    return GPTBigCodeConfig(
        vocab_size=STARCODER2_VOCAB, n_positions=8192, n_embd=6144, n_layer=40, n_head=48,
        n_inner=24576, multi_query=True, activation_function="gelu_pytorch_tanh",
        layer_norm_epsilon=1e-5, initializer_range=0.02, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
    )


@PRESETS.register("base")
def base() -> Any:
    """StarCoder2 family, ~113M params at vocab 49152 (GPT-2-small scale, for single-GPU runs): 12 x 768."""
    return _starcoder2(layers=12, hidden=768, heads=12, kv_heads=4, ffn=3072, rope_theta=1e5, tie=True,
                       context=4096, window=None)


@PRESETS.register("small")
def small() -> Any:
    """StarCoder2 family, ~45M params at vocab 49152 (~22M non-embedding): 6 layers, hidden 512, GQA 8/2."""
    return _starcoder2(layers=6, hidden=512, heads=8, kv_heads=2, ffn=2048, rope_theta=1e5, tie=True,
                       context=4096, window=None)


@PRESETS.register("tiny")
def tiny() -> Any:
    """StarCoder2 family, a few million params (CPU tests, demo): 4 layers, hidden 256, GQA 4/2."""
    return _starcoder2(layers=4, hidden=256, heads=4, kv_heads=2, ffn=1024, rope_theta=1e5, tie=True,
                       context=4096, window=None)
