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
