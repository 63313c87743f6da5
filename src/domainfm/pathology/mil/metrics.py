"""Slide-level metrics: AUC with a 95% bootstrap CI (domainfm.core.metrics), accuracy, balanced accuracy."""

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


def binary_metrics(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUC (+ 95% percentile-bootstrap CI), accuracy and balanced accuracy at 0.5, n, n_positive."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {"n": int(len(y)), "n_positive": int(y.sum()),
                           "accuracy": accuracy(y, p), "balanced_accuracy": balanced_accuracy(y, p)}
    if len(np.unique(y)) == 2:
        auc, lo, hi = bootstrap_ci(y, p, roc_auc, n_boot=n_boot, seed=seed)
        out.update(auc=auc, auc_ci=[lo, hi])
    else:  # AUC is undefined with one class
        out.update(auc=None, auc_ci=None)
    return out
