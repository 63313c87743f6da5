"""The long-context stage's config and the recipes' published stage values (light: the CLI imports it).

See `stages.py` for the stage itself and the sources of every value below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domainfm.code.train.config import PretrainConfig


@dataclass(frozen=True)
class StageSpec:
    """One training stage of a recipe: context length, RoPE theta, attention window (None = full)."""

    seq_len: int
    rope_theta: float
    sliding_window: int | None = None
    tokens: float | None = None  # tokens trained in the stage, where published


# StarCoder2 per preset: base stage (section 6.1: 4k context, theta 1e5) and the long-context stage (section 6:
# 16,384 context, sliding window 4,096, 200B tokens; theta = the released config.json's rope_theta)
_SC2_BASE = StageSpec(seq_len=4096, rope_theta=1e5)
RECIPES: dict[str, dict[str, StageSpec]] = {
    "starcoder2-3b": {"base": _SC2_BASE, "long_context": StageSpec(16384, 999999.4420358813, 4096, 200e9)},
    "starcoder2-7b": {"base": _SC2_BASE, "long_context": StageSpec(16384, 1e6, 4096, 200e9)},
    "starcoder2-15b": {"base": _SC2_BASE, "long_context": StageSpec(16384, 1e5, 4096, 200e9)},
}
# our own sizes (context 4,096, theta 1e5 like StarCoder2's base stage) continue the way the 3B and 7B did:
# 4x the context, theta x10, full attention (they have no sliding window)
for _name in ("base", "small", "tiny"):
    RECIPES[_name] = {"base": _SC2_BASE, "long_context": StageSpec(16384, 1e6, None, None)}

STAGE_KEYS = ("init_from", "rope_theta", "context", "sliding_window")
STAGE_DIR = "stage_model"  # OUT/stage_model/config.json: the stage's model config (the trainer's `preset`)


@dataclass
class LongContextConfig(PretrainConfig):
    """`PretrainConfig` + where the stage starts and what it changes; `preset` is derived from `init_from`."""

    init_from: str = field(default="", metadata={"help": "the base run to continue: its folder (final/ or, "
                                                 "failing that, its newest checkpoint), a final/ folder or a "
                                                 "checkpoint folder"})
    rope_theta: float = field(default=0.0, metadata={"help": "RoPE base period of the stage (0 = the recipe's "
                                                      "long-context value for the base run's preset)"})
    context: int = field(default=0, metadata={"help": "max_position_embeddings of the stage's model "
                                              "(0 = the sequence length trained on)"})
    sliding_window: int = field(default=-1, metadata={"help": "attention window in tokens (-1 = keep the base "
                                                      "model's, 0 = full attention)"})
    out: str = field(default="runs/long_context", metadata={"help": "output folder (checkpoints, metrics, "
                                                             "final/)"})
    preset: str = field(default="", metadata={"help": "set by the stage (OUT/stage_model/config.json: the base "
                                              "model's config with the stage's theta and context)"})
