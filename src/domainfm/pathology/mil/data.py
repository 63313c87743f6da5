"""Slide labels, per-slide feature bags, and padded/masked batches with a tile cap.

A cohort is a labels CSV (`slide_id, patient_id, label[, cohort]`) plus a folder of per-slide
feature files `<slide_id>.h5` (dataset `features` (N, D), optional `coords` (N, 2)), as written by
`domainfm pathology extract --tiles` or by `domainfm pathology bags` -- or a feature folder made by
CLAM (`h5_files/*.h5` + `pt_files/*.pt`) or TRIDENT (`features_<encoder>/*.h5`, or its job folder);
see `domainfm.pathology.features.interop`. Every CSV row is accounted for: slides whose feature file
is missing or empty are dropped with the reason (`Cohort.dropped`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("mil.data")
_TRUE = {"1", "1.0", "true", "yes", "positive", "pos"}
_FALSE = {"0", "0.0", "false", "no", "negative", "neg"}


@dataclass
class SlideLabel:
    slide_id: str
    patient_id: str
    label: int
    cohort: str = ""


@dataclass
class Cohort:
    """Labelled bags in memory: `features[i]` is (N_i, D) float32 for `slides[i]`."""

    slides: list[SlideLabel]
    features: list[np.ndarray]
    coords: list[np.ndarray | None]
    attrs: dict[str, Any] = field(default_factory=dict)  # of the first feature file (encoder, tiling)
    dropped: list[dict[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.slides], dtype=np.int64)

    @property
    def patients(self) -> np.ndarray:
        return np.array([s.patient_id for s in self.slides])

    @property
    def slide_ids(self) -> list[str]:
        return [s.slide_id for s in self.slides]

    @property
    def in_dim(self) -> int:
        return int(self.features[0].shape[1])

    def subset(self, idx: np.ndarray | list[int]) -> Cohort:
        return Cohort([self.slides[i] for i in idx], [self.features[i] for i in idx],
                      [self.coords[i] for i in idx], self.attrs, [])

    def __len__(self) -> int:
        return len(self.slides)


def _parse_label(raw: str, where: str) -> int:
    v = raw.strip().lower()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise UserError(f"{where}: label {raw!r} is not binary (use 0/1)")


def read_labels(csv_path: str | Path) -> list[SlideLabel]:
    """Read `slide_id, patient_id, label[, cohort]`; a missing patient_id column means one patient per slide."""
    p = Path(csv_path)
    if not p.is_file():
        raise UserError(f"labels CSV not found: {p}")
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for need in ("slide_id", "label"):
            if need not in cols:
                raise UserError(f"{p}: missing column {need!r} (have: {', '.join(cols) or 'none'})")
        if "patient_id" not in cols:
            log.warning("%s has no patient_id column: each slide is its own patient", p)
        out, seen = [], set()
        for i, row in enumerate(reader, 2):
            sid = (row["slide_id"] or "").strip()
            if not sid:
                raise UserError(f"{p}:{i}: empty slide_id")
            if sid in seen:
                raise UserError(f"{p}:{i}: slide_id {sid!r} appears twice")
            seen.add(sid)
            out.append(SlideLabel(sid, (row.get("patient_id") or sid).strip() or sid,
                                  _parse_label(row["label"] or "", f"{p}:{i}"), (row.get("cohort") or "").strip()))
    if not out:
        raise UserError(f"{p}: no rows")
    return out


def feature_path(features_dir: Path, slide_id: str) -> Path | None:
    """`DIR/<id>.h5`, `DIR/features/<id>.h5` (an extract output folder), CLAM's `DIR/h5_files/<id>.h5` or
    `DIR/pt_files/<id>.pt`, TRIDENT's `DIR/[<patching>/]features_<encoder>/<id>.h5`."""
    from domainfm.pathology.features.interop import find_feature_file

    return find_feature_file(features_dir, slide_id)


def load_unlabelled(features_dir: str | Path, in_dim: int | None = None
                    ) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Every slide's features in a folder of any supported layout -> (slide ids, bags (N_i, D), skipped
    reasons). Bags that are empty, unreadable or not `in_dim` wide are skipped with the reason."""
    from domainfm.pathology.features.interop import list_feature_files, read_feature_file

    files = list_feature_files(features_dir)
    if not files:
        raise UserError(f"no feature files (.h5, CLAM h5_files/pt_files, TRIDENT features_*) in {features_dir}")
    ids, bags, skipped = [], [], []
    for sid, p in files.items():
        try:
            x = read_feature_file(p).features
        except UserError as exc:
            skipped.append(f"{p.name} ({exc})")
            continue
        if x.ndim != 2 or len(x) == 0 or (in_dim is not None and x.shape[1] != in_dim):
            skipped.append(f"{p.name} (features {x.shape}, model expects (N, {in_dim}))")
            continue
        ids.append(sid)
        bags.append(x)
    return ids, bags, skipped


def load_cohort(features_dir: str | Path, labels: list[SlideLabel] | str | Path) -> Cohort:
    """Load every labelled slide's features into memory; unreadable or missing ones are dropped with a reason."""
    from domainfm.pathology.features.interop import read_feature_file

    d = Path(features_dir)
    if not d.is_dir():
        raise UserError(f"features folder not found: {d}")
    rows = read_labels(labels) if isinstance(labels, str | Path) else labels
    slides, feats, coords, dropped, attrs = [], [], [], [], {}
    dim = None
    for s in rows:
        path = feature_path(d, s.slide_id)
        if path is None:
            dropped.append({"slide_id": s.slide_id, "reason": "no feature file"})
            continue
        try:
            sf = read_feature_file(path)
        except UserError as exc:
            dropped.append({"slide_id": s.slide_id, "reason": f"unreadable feature file ({exc})"})
            continue
        x, c = sf.features, sf.coords
        if not attrs:
            attrs = sf.attrs
        if x.ndim != 2 or len(x) == 0:
            dropped.append({"slide_id": s.slide_id, "reason": "no tiles"})
            continue
        if dim is not None and x.shape[1] != dim:
            raise UserError(f"{path}: feature size {x.shape[1]} differs from the others ({dim})")
        dim = x.shape[1]
        slides.append(s)
        feats.append(x)
        coords.append(c)
    for drop in dropped:
        log.warning("slide %s dropped: %s", drop["slide_id"], drop["reason"])
    if not slides:
        raise UserError(f"none of the {len(rows)} labelled slides has a usable feature file in {d}")
    return Cohort(slides, feats, coords, attrs, dropped)


def collate(bags: list[np.ndarray], max_tiles: int | None = None,
            rng: np.random.Generator | None = None) -> tuple[Any, Any]:
    """Pad bags to (B, N_max, D) with a (B, N_max) mask; bags above `max_tiles` are randomly subsampled
    with `rng` (training) or, without `rng`, keep their first `max_tiles` tiles."""
    import torch

    picked = []
    for x in bags:
        if max_tiles and len(x) > max_tiles:
            idx = np.sort(rng.choice(len(x), max_tiles, replace=False)) if rng is not None else np.arange(max_tiles)
            x = x[idx]
        picked.append(x)
    n = max(len(x) for x in picked)
    out = np.zeros((len(picked), n, picked[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(picked), n), dtype=bool)
    for i, x in enumerate(picked):
        out[i, : len(x)] = x
        mask[i, : len(x)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)
