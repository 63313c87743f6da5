"""Helpers of the MIL tests: small labelled feature files and synthetic slide cohorts written here."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np


def write_labelled_h5(path: Path, n_neg: int = 300, n_pos: int = 100, dim: int = 8, seed: int = 0,
                      prefix: str = "", dup: int = 0) -> Path:
    """An ImageFolder-style feature file: class '0' near 0, class '1' shifted; `dup` duplicated rows."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_neg + n_pos, dim)).astype(np.float32)
    feats[n_neg:, 0] += 3.0
    labels = np.array([0] * n_neg + [1] * n_pos)
    paths = [f"{c}/{prefix}patch{i:05d}.jpg" for i, c in enumerate(labels)]
    if dup:
        feats[n_neg:n_neg + dup] = feats[n_neg + dup:n_neg + 2 * dup]
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("labels", data=labels)
        f.create_dataset("paths", data=np.array(paths, dtype=object), dtype=h5py.string_dtype())
        f.attrs["classes"] = ["0", "1"]
        f.attrs["encoder"] = "toy-encoder"
    return path


def write_cohort(root: Path, n_slides: int = 24, dim: int = 8, seed: int = 0, slides_per_patient: int = 2,
                 cohort: str = "", signal: float = 4.0, prefix: str = "s") -> tuple[Path, Path]:
    """Per-slide feature files with 5-30 tiles; positive slides hold a few tiles shifted on dim 0."""
    rng = np.random.default_rng(seed)
    feats_dir = root / "features"
    feats_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_slides):
        label = (i // slides_per_patient) % 2  # a patient's slides share its label
        n = int(rng.integers(5, 31))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        if label:
            k = max(1, n // 5)
            x[:k, 0] += signal
        sid = f"{prefix}{i:03d}"
        with h5py.File(feats_dir / f"{sid}.h5", "w") as f:
            f.create_dataset("features", data=x)
            f.create_dataset("coords", data=np.stack([np.arange(n) * 10, np.zeros(n)], 1).astype(np.int64))
            f.attrs["encoder"] = "toy-encoder"
        row = {"slide_id": sid, "patient_id": f"p{prefix}{i // slides_per_patient:03d}", "label": label}
        if cohort:
            row["cohort"] = cohort
        rows.append(row)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return feats_dir, labels
