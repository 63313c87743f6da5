"""Shared statistics: the unbiased pass@k estimator, ROC AUC, bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed stably as a product."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float:
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, cs, strict=True)]))


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic with mid-ranks for ties (equals scikit-learn's)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks: equal scores share the mean of their positions (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _cluster_index(groups: Sequence | np.ndarray | None, n: int) -> list[np.ndarray]:
    """Sample indices of each cluster (first-appearance order); no groups = every sample its own cluster."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    g = np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"{len(g)} groups for {n} samples")
    _, first, inv = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first)  # clusters in order of first appearance (deterministic, data-order based)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    members = [[] for _ in order]
    for i, c in enumerate(rank[inv.ravel()]):
        members[c].append(i)
    return [np.asarray(m) for m in members]


def bootstrap_ci(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                 metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0,
                 groups: Sequence | np.ndarray | None = None) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile bootstrap; resamples lacking a class are redrawn.

    `groups` (one id per sample, e.g. the patient of each slide) makes it a cluster bootstrap: whole
    clusters are drawn with replacement and bring all their samples, because slides of one patient
    are not independent. `scores` may be (R, n): R score vectors of the same samples (e.g. the
    out-of-fold scores of R repeats of a cross-validation); the statistic is then the mean over the R
    rows of the metric, and every bootstrap draw uses the same resampled clusters for all R rows,
    so the repeats are combined per draw rather than averaged into one score first.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores)
    rows = s.reshape(1, -1) if s.ndim == 1 else s
    if rows.shape[1] != len(y):
        raise ValueError(f"scores {s.shape} do not match {len(y)} labels")
    rng = np.random.default_rng(seed)

    def stat(idx: np.ndarray) -> float:
        return float(np.mean([metric(y[idx], r[idx]) for r in rows]))

    point = stat(np.arange(len(y)))
    clusters = _cluster_index(groups, len(y))
    k = len(clusters)
    stats: list[float] = []
    attempts = 0
    while len(stats) < n_boot and attempts < n_boot * 10:
        attempts += 1
        pick = rng.integers(0, k, k)
        idx = pick if groups is None else np.concatenate([clusters[c] for c in pick])
        if len(np.unique(y[idx])) < 2:
            continue
        stats.append(stat(idx))
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(point), float(lo), float(hi)
