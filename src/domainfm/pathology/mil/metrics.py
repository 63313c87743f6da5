"""Slide-level metrics: AUC with a 95% patient-level bootstrap CI (domainfm.core.metrics), accuracy, balanced accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from domainfm.core.metrics import bootstrap_ci, roc_auc


def accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean((np.asarray(p) >= threshold).astype(int) == np.asarray(y)))


def balanced_accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity (classes absent from `y` are skipped)."""
    y = np.asarray(y)
    pred = (np.asarray(p) >= threshold).astype(int)
    recalls = [float(np.mean(pred[y == c] == c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls))


def binary_metrics(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   groups: np.ndarray | None = None) -> dict[str, Any]:
    """AUC (+ 95% percentile-bootstrap CI), accuracy and balanced accuracy at 0.5, n, n_positive.

    `groups` = the patient of each slide: the CI then comes from a patient-level (cluster) bootstrap.
    `p` may be (R, n), the scores of R repeats of a CV: every figure is then the mean over repeats of the
    per-repeat figure, and the CI combines the repeats per bootstrap draw (core.metrics.bootstrap_ci).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    rows = p.reshape(1, -1) if p.ndim == 1 else p
    out: dict[str, Any] = {"n": int(len(y)), "n_positive": int(y.sum()),
                           "accuracy": float(np.mean([accuracy(y, r) for r in rows])),
                           "balanced_accuracy": float(np.mean([balanced_accuracy(y, r) for r in rows]))}
    if groups is not None:
        out["n_patients"] = int(len(np.unique(np.asarray(groups))))
    if len(np.unique(y)) == 2:
        auc, lo, hi = bootstrap_ci(y, rows, roc_auc, n_boot=n_boot, seed=seed, groups=groups)
        out.update(auc=auc, auc_ci=[lo, hi], ci="patient bootstrap" if groups is not None else "slide bootstrap")
    else:  # AUC is undefined with one class
        out.update(auc=None, auc_ci=None)
    return out
