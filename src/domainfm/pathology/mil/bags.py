"""PCam-bags: "virtual slides" assembled from a labelled tile feature file (the Camelyon16 setting in miniature).

Input: a feature file written by `domainfm pathology extract --images FOLDER` (datasets `features`
(N, D), `labels` (N,) class index in sorted folder-name order, `paths` (N,), attr `classes`). Any
ImageFolder-derived file works (PCam's `train` or `valid`, a user's own labelled patches).

A positive bag holds a minority of positive-class tiles (a fraction drawn uniformly in
`positive_fraction`, at least one tile) among negative ones; a negative bag holds only negative
tiles. Everything is drawn from one `numpy` generator seeded by `seed`, so the same file and config
always give the same bags, and tiles are drawn without replacement: no tile is in two bags. Build the
CV cohort from one split and the external cohort from another: the two then share no patch.

Exact duplicates (PCam holds byte-identical images inside a split) give identical feature rows;
they are dropped before drawing (first occurrence kept), so a duplicate cannot sit in two bags.

Coordinates are synthetic: a virtual slide has no geometry, so tile j of a bag is placed on a
square grid (column j % g, row j // g, g = ceil(sqrt(bag_size))) at `tile_size` px per cell. They
exist so that every per-slide tool (heatmaps, GeoJSON) works on virtual slides too.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_json
from domainfm.core.progress import get_logger

log = get_logger("mil.bags")


@dataclass
class BagsConfig:
    n_bags: int = field(default=100, metadata={"help": "number of virtual slides"})
    bag_size: int = field(default=64, metadata={"help": "tiles per virtual slide"})
    positive_fraction: tuple[float, float] = field(
        default=(0.01, 0.25), metadata={"help": "range of the positive-tile fraction in a positive bag"})
    positive_bags: float = field(default=0.5, metadata={"help": "share of bags that are positive"})
    seed: int = field(default=0, metadata={"help": "random seed (same seed + file = same bags)"})
    positive_class: str = field(default="1", metadata={"help": "class name counted as positive (tumour)"})
    slides_per_patient: int = field(default=1, metadata={"help": "consecutive bags grouped into one patient"})
    cohort: str = field(default="", metadata={"help": "value of the labels.csv cohort column (none if empty)"})
    prefix: str = field(default="bag", metadata={"help": "slide_id prefix"})
    tile_size: int = field(default=0, metadata={"help": "grid cell size of the synthetic coords (0: image size)"})
    dedup: bool = field(default=True, metadata={"help": "drop exact duplicate feature rows first"})
    patch_mpp: float = field(default=0.0, metadata={"help": "um/px of the patches (0: unknown; PCam: 0.972)"})


def _str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def read_labelled_features(path: str | Path) -> dict[str, Any]:
    """Read `features`, `labels`, `paths` and attrs of an ImageFolder feature file (clear errors)."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise UserError(f"feature file not found: {p}")
    try:
        with h5py.File(p, "r") as f:
            missing = [k for k in ("features", "labels") if k not in f]
            if missing:
                raise UserError(f"{p}: missing dataset(s) {', '.join(missing)}; expected the output of "
                                "`domainfm pathology extract --images FOLDER`")
            feats = f["features"][()]
            labels = f["labels"][()].astype(np.int64)
            paths = [_str(x) for x in f["paths"][()]] if "paths" in f else [str(i) for i in range(len(labels))]
            attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise UserError(f"{p}: not a readable HDF5 file ({exc})") from None
    if feats.ndim != 2 or len(feats) != len(labels) or len(paths) != len(labels):
        raise UserError(f"{p}: features {feats.shape}, labels {labels.shape}, paths {len(paths)} do not line up")
    classes = [_str(c) for c in attrs.get("classes", [])] or [str(c) for c in sorted(set(labels.tolist()))]
    return {"features": feats, "labels": labels, "paths": paths, "classes": classes,
            "attrs": {k: (_str(v) if isinstance(v, bytes) else v) for k, v in attrs.items()}}


def _positive_index(classes: list[str], positive_class: str) -> int:
    if positive_class in classes:
        return classes.index(positive_class)
    raise UserError(f"positive class {positive_class!r} not among the classes {classes}; pass --positive-class")


def dedup_rows(feats: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct feature row, in order."""
    seen: dict[bytes, int] = {}
    keep = []
    for i in range(len(feats)):
        key = np.ascontiguousarray(feats[i]).tobytes()
        if key not in seen:
            seen[key] = i
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def plan_bags(labels: np.ndarray, positive: int, cfg: BagsConfig,
              candidates: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Decide each bag's label and source tile indices (no I/O). Deterministic in `cfg.seed`."""
    lo, hi = cfg.positive_fraction
    if not 0 < lo <= hi <= 1:
        raise UserError(f"--positive-fraction must satisfy 0 < LO <= HI <= 1, got {lo} {hi}")
    if cfg.n_bags < 1 or cfg.bag_size < 1:
        raise UserError("--n-bags and --bag-size must be >= 1")
    if not 0 <= cfg.positive_bags <= 1:
        raise UserError("--positive-bags must be in [0, 1]")
    cand = np.arange(len(labels)) if candidates is None else np.asarray(candidates)
    rng = np.random.default_rng(cfg.seed)
    pos_pool = rng.permutation(cand[labels[cand] == positive])
    neg_pool = rng.permutation(cand[labels[cand] != positive])
    n_pos_bags = int(round(cfg.n_bags * cfg.positive_bags))
    bag_labels = rng.permutation(np.array([1] * n_pos_bags + [0] * (cfg.n_bags - n_pos_bags)))
    M = cfg.bag_size
    fracs = rng.uniform(lo, hi, size=cfg.n_bags)
    k_pos = np.where(bag_labels == 1, np.clip(np.round(fracs * M), 1, M), 0).astype(int)
    need_pos, need_neg = int(k_pos.sum()), int((M - k_pos).sum())
    if need_pos > len(pos_pool) or need_neg > len(neg_pool):
        raise UserError(f"not enough tiles: these bags need {need_pos} positive and {need_neg} negative "
                        f"tiles, the file has {len(pos_pool)} and {len(neg_pool)} (after dedup); "
                        "use fewer or smaller bags")
    plans, ip, ineg = [], 0, 0
    for b in range(cfg.n_bags):
        k = int(k_pos[b])
        idx = np.concatenate([pos_pool[ip:ip + k], neg_pool[ineg:ineg + M - k]])
        ip, ineg = ip + k, ineg + M - k
        idx = idx[rng.permutation(M)]  # tumour tiles land anywhere on the virtual slide
        plans.append({"label": int(bag_labels[b]), "n_positive": k, "indices": idx.astype(np.int64)})
    return plans


def grid_coords(n: int, tile_size: int) -> np.ndarray:
    """(n, 2) int64 top-left (x, y) of cells of a square grid: tile j at column j % g, row j // g."""
    g = max(1, math.ceil(math.sqrt(n)))
    j = np.arange(n)
    return np.stack([(j % g) * tile_size, (j // g) * tile_size], axis=1).astype(np.int64)


def build_bags(features_h5: str | Path, out_dir: str | Path, cfg: BagsConfig) -> dict[str, Any]:
    """Write one HDF5 per virtual slide + `labels.csv` + `bags.json`; return the manifest."""
    import h5py

    src = read_labelled_features(features_h5)
    pos = _positive_index(src["classes"], cfg.positive_class)
    labels = src["labels"]
    cand = dedup_rows(src["features"]) if cfg.dedup else np.arange(len(labels))
    n_dup = len(labels) - len(cand)
    if n_dup:
        log.info("dropped %d exact duplicate tiles before drawing bags", n_dup)
    plans = plan_bags(labels, pos, cfg, cand)
    tile_size = cfg.tile_size or int(src["attrs"].get("image_size", 0) or 0) or 96
    out = Path(out_dir)
    check_bags_folder(out, features_h5, cfg)
    out.mkdir(parents=True, exist_ok=True)
    coords = grid_coords(cfg.bag_size, tile_size)
    rows = []
    for b, plan in enumerate(plans):
        sid = f"{cfg.prefix}_{b:04d}"
        pid = f"{cfg.prefix}_patient_{b // max(1, cfg.slides_per_patient):04d}"
        idx = plan["indices"]
        with atomic_path(out / f"{sid}.h5") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=src["features"][idx])
            f.create_dataset("coords", data=coords)
            f.create_dataset("source_indices", data=idx)
            f.create_dataset("tile_labels", data=(labels[idx] == pos).astype(np.int8))
            f.create_dataset("paths", data=np.array([src["paths"][i] for i in idx], dtype=object),
                             dtype=h5py.string_dtype())
            f.attrs.update({"slide_id": sid, "patient_id": pid, "label": plan["label"],
                            "n_positive_tiles": plan["n_positive"], "virtual": True,
                            "tile_size": tile_size, "level0_tile_size": tile_size,
                            "source_features": str(Path(features_h5).resolve())})
            for key in ("encoder", "encoder_spec", "encoder_path", "encoder_arch", "encoder_image_size",
                        "encoder_embed_dim", "encoder_source", "encoder_config", "image_size", "target_mpp"):
                if key in src["attrs"]:
                    f.attrs[key] = src["attrs"][key]
            if cfg.patch_mpp:  # the user's value wins
                f.attrs["target_mpp"] = cfg.patch_mpp
        row = {"slide_id": sid, "patient_id": pid, "label": plan["label"]}
        if cfg.cohort:
            row["cohort"] = cfg.cohort
        rows.append(row)
    with atomic_path(out / "labels.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    manifest = {
        "source": str(Path(features_h5).resolve()), "classes": src["classes"], "positive_class": cfg.positive_class,
        "encoder": src["attrs"].get("encoder"), "n_tiles_in_file": int(len(labels)),
        "n_duplicates_dropped": int(n_dup), "n_bags": cfg.n_bags,
        "n_positive_bags": sum(p["label"] for p in plans),
        "n_tiles_used": int(cfg.n_bags * cfg.bag_size),
        "positive_tile_fractions": [round(p["n_positive"] / cfg.bag_size, 4) for p in plans],
        "coords": f"synthetic square grid, {tile_size} px cells", "config": _cfg_dict(cfg),
    }
    atomic_write_json(out / "bags.json", manifest)
    return manifest


def check_bags_folder(out: Path, features_h5: str | Path, cfg: BagsConfig) -> None:
    """Refuse to write bags into a folder holding bags built from another file or with other parameters
    (their .h5 files would mix; rebuilding with the same ones is deterministic and harmless)."""
    man = out / "bags.json"
    if not man.is_file():
        return
    old = json.loads(man.read_text())
    want = {"source": str(Path(features_h5).resolve()), "config": json.loads(json.dumps(_cfg_dict(cfg)))}
    diff = [k for k in want["config"] if old.get("config", {}).get(k) != want["config"][k]]
    if old.get("source") != want["source"]:
        diff.insert(0, "source")
    if diff:
        raise UserError(f"{out} holds bags made with other parameters ({', '.join(diff)} differ); "
                        "use another output folder or delete it")


def _cfg_dict(cfg: BagsConfig) -> dict[str, Any]:
    from domainfm.core.config import config_to_dict

    return config_to_dict(cfg)
