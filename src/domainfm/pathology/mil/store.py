"""Saved MIL models: `MODEL_DIR/model.safetensors` (weights) + `MODEL_DIR/model.json` (how to rebuild it,
the training settings, and the encoder + tiling that produced its features, so `heatmap` can go from
a raw slide to the same kind of features)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_json

WEIGHTS = "model.safetensors"
META = "model.json"
# feature-file attributes worth keeping: which encoder, and how the tiles were cut
PROVENANCE_KEYS = ("encoder", "encoder_path", "encoder_config", "image_size", "tile_size", "target_mpp",
                   "level0_tile_size", "tissue_threshold", "virtual")


def save_mil_model(model: Any, out_dir: str | Path, name: str, meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(d / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(d / META, {"model": name, "hparams": model.hparams(),
                                 "tile_score_kind": model.tile_score_kind, **meta})
    return d


def provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The encoder/tiling attributes of a feature file, JSON-safe."""
    out = {}
    for k in PROVENANCE_KEYS:
        if k in attrs:
            v = attrs[k]
            out[k] = v.item() if hasattr(v, "item") else (v.decode() if isinstance(v, bytes) else v)
    return out


def load_mil_model(model_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, its metadata) from a folder written by `mil train`."""
    from safetensors.torch import load_file

    from domainfm.pathology.mil.models import build_mil_model

    d = Path(model_dir)
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise UserError(f"{d}: not a MIL model folder (expected {META} and {WEIGHTS}; "
                        "create one with `domainfm pathology mil train`)")
    meta = json.loads((d / META).read_text())
    hp = dict(meta["hparams"])
    in_dim = hp.pop("in_dim")
    if "mlp_hidden" in hp:
        hp["mlp_hidden"] = tuple(hp["mlp_hidden"])
    model = build_mil_model(meta["model"], in_dim, **hp)
    model.load_state_dict(load_file(str(d / WEIGHTS)))
    return model.to(device).eval(), meta
