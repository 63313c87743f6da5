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
PROVENANCE_KEYS = ("encoder", "encoder_spec", "encoder_path", "encoder_arch", "encoder_image_size",
                   "encoder_embed_dim", "encoder_source", "encoder_config", "image_size", "tile_size", "target_mpp",
                   "level0_tile_size", "tissue_threshold", "virtual")
# the attributes that identify the encoder of a feature file (features/extract.py `encoder_attrs`)
ENCODER_KEYS = ("encoder", "encoder_spec", "encoder_path", "encoder_arch", "encoder_image_size",
                "encoder_embed_dim", "encoder_source")


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


def _plain(v: Any) -> str:
    v = v.item() if hasattr(v, "item") else v
    return v.decode() if isinstance(v, bytes) else str(v)


def encoder_record(attrs: dict[str, Any]) -> dict[str, str]:
    """The encoder-identifying attributes present in a feature file's (or a model's provenance) attrs."""
    return {k: _plain(attrs[k]) for k in ENCODER_KEYS if k in attrs and _plain(attrs[k]) != ""}


def encoder_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'key: A vs B' for each encoder attribute both records hold with different values."""
    ra, rb = encoder_record(a), encoder_record(b)
    return [f"{k}: {ra[k]!r} vs {rb[k]!r}" for k in ENCODER_KEYS if k in ra and k in rb and ra[k] != rb[k]]


def check_same_encoder(records: dict[str, dict[str, Any]], what: str = "feature files") -> None:
    """Refuse features made by different encoders (`records`: where -> attrs; those without any encoder
    attribute, e.g. a CLAM `.pt`, cannot be compared and are let through)."""
    ref_name, ref = None, None
    for name, attrs in records.items():
        if not encoder_record(attrs):
            continue
        if ref is None:
            ref_name, ref = name, attrs
            continue
        diff = encoder_differences(ref, attrs)
        if diff:
            raise UserError(f"{what} made by different encoders: {ref_name} and {name} differ in "
                            f"{'; '.join(diff[:2])}; use features of one encoder")


def feature_file_records(features_dir: str | Path, slide_ids: list[str]) -> dict[str, dict[str, Any]]:
    """slide_id -> the encoder attributes of its HDF5 feature file (attributes only: nothing is loaded)."""
    import h5py

    from domainfm.pathology.mil.data import feature_path

    out: dict[str, dict[str, Any]] = {}
    for sid in slide_ids:
        path = feature_path(Path(features_dir), sid)
        if path is None or path.suffix != ".h5":
            continue
        try:
            with h5py.File(path, "r") as f:
                out[str(path)] = {k: f.attrs[k] for k in ENCODER_KEYS if k in f.attrs}
        except OSError:
            continue  # unreadable files are accounted for by load_cohort
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
