from __future__ import annotations

from math import comb

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from domainfm.core.metrics import bootstrap_ci, pass_at_k, roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_pass_at_k_matches_combinatorial_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        ref = 1.0 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        y[0], y[1] = 0, 1
        s = np.round(rng.normal(size=200) + y, 1)  # rounding makes ties
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_ci_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    s = rng.normal(size=100) + y
    point, lo, hi = bootstrap_ci(y, s, n_boot=200, seed=3)
    # direct: same RNG stream, same resampling rule
    r = np.random.default_rng(3)
    vals = []
    while len(vals) < 200:
        idx = r.integers(0, 100, 100)
        if len(np.unique(y[idx])) < 2:
            continue
        vals.append(roc_auc_score(y[idx], s[idx]))
    assert point == pytest.approx(roc_auc_score(y, s))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])))
    assert lo < point < hi


def _patients(seed: int, n_pat: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slides grouped by patient (1-4 slides each); a patient's slides share its label."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_pat)
    groups = np.repeat([f"p{i:02d}" for i in range(n_pat)], sizes)
    y = np.repeat(np.arange(n_pat) % 2, sizes)
    s = rng.normal(size=len(y)) + 0.8 * y
    order = rng.permutation(len(y))  # slides of a patient need not be contiguous
    return y[order], s[order], groups[order]


def test_cluster_bootstrap_against_hand_written_reference() -> None:
    y, s, groups = _patients(0)
    point, lo, hi = bootstrap_ci(y, s, n_boot=200, seed=4, groups=groups)
    # by hand: draw patients with replacement, each brings all its slides; clusters in first-seen order
    names = list(dict.fromkeys(groups.tolist()))
    members = {g: np.flatnonzero(groups == g) for g in names}
    r = np.random.default_rng(4)
    vals = []
    while len(vals) < 200:
        pick = r.integers(0, len(names), len(names))
        idx = np.concatenate([members[names[c]] for c in pick])
        if len(np.unique(y[idx])) < 2:
            continue
        vals.append(roc_auc_score(y[idx], s[idx]))
    assert point == pytest.approx(roc_auc_score(y, s))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])), abs=1e-12)


def test_cluster_bootstrap_ignores_copies_of_a_patient() -> None:
    """Five identical slides per patient carry one patient's information: the patient bootstrap gives
    exactly the CI of one slide per patient, the slide bootstrap a falsely narrow one."""
    rng = np.random.default_rng(2)
    y1 = np.arange(40) % 2
    s1 = rng.normal(size=40) + 0.7 * y1
    y5, s5, g5 = np.repeat(y1, 5), np.repeat(s1, 5), np.repeat(np.arange(40), 5)
    _, lo1, hi1 = bootstrap_ci(y1, s1, n_boot=300, seed=0)
    _, lo5, hi5 = bootstrap_ci(y5, s5, n_boot=300, seed=0, groups=g5)
    assert (lo5, hi5) == pytest.approx((lo1, hi1), abs=1e-12)
    _, lo_s, hi_s = bootstrap_ci(y5, s5, n_boot=300, seed=0)
    assert hi_s - lo_s < 0.7 * (hi5 - lo5)


def test_repeats_are_combined_per_draw_not_averaged_first() -> None:
    y, s, groups = _patients(1)
    rng = np.random.default_rng(9)
    rows = np.stack([s + rng.normal(scale=1.0, size=len(s)) for _ in range(3)])  # 3 CV repeats
    point, lo, hi = bootstrap_ci(y, rows, n_boot=150, seed=2, groups=groups)
    assert point == pytest.approx(np.mean([roc_auc_score(y, r) for r in rows]))
    assert point != pytest.approx(roc_auc_score(y, rows.mean(0)), abs=1e-3)  # not the AUC of averaged scores
    names = list(dict.fromkeys(groups.tolist()))
    members = {g: np.flatnonzero(groups == g) for g in names}
    r = np.random.default_rng(2)
    vals = []
    while len(vals) < 150:
        pick = r.integers(0, len(names), len(names))
        idx = np.concatenate([members[names[c]] for c in pick])
        if len(np.unique(y[idx])) < 2:
            continue
        vals.append(np.mean([roc_auc_score(y[idx], row[idx]) for row in rows]))  # same patients, every repeat
    assert (lo, hi) == pytest.approx(tuple(np.quantile(vals, [0.025, 0.975])), abs=1e-12)
