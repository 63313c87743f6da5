"""StarCoder-family models: presets (`PRESETS`) and `build_model`, all on transformers' own classes.

    from domainfm.code.model import build_model
    model = build_model("tiny", vocab_size=8192, device="cpu")     # a Starcoder2ForCausalLM
    build_model("starcoder2-15b", device="meta")                   # shapes only, no memory
"""

from __future__ import annotations

from domainfm.code.model.build import build_model, count_params, model_config, param_summary
from domainfm.code.model.presets import PRESETS, PUBLISHED_PARAMS

__all__ = ["PRESETS", "PUBLISHED_PARAMS", "build_model", "count_params", "model_config", "param_summary"]
