"""Patient-level splits, metrics against scikit-learn and a direct bootstrap computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from domainfm.core.errors import UserError
from domainfm.core.metrics import roc_auc
from domainfm.pathology.mil.metrics import accuracy, balanced_accuracy, binary_metrics
from domainfm.pathology.mil.splits import patient_folds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_on_both_sides_and_stratified(seed: int) -> None:
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(40)], rng.integers(1, 4, 40))
    pat_label = {f"p{i}": i % 2 for i in range(40)}
    labels = np.array([pat_label[p] for p in patients])
    folds = patient_folds(labels, patients, 5, seed)
    assert len(folds) == 5
    seen = np.zeros(len(labels), int)
    for tr, te in folds:
        assert not set(patients[tr]) & set(patients[te])
        assert set(tr) | set(te) == set(range(len(labels)))
        assert 0 < labels[te].mean() < 1  # both classes in every test fold
        seen[te] += 1
    assert (seen == 1).all()  # every slide tested exactly once


def test_folds_deterministic() -> None:
    labels = np.array([0, 1] * 10)
    patients = np.arange(20).astype(str)
    a = patient_folds(labels, patients, 4, 7)
    b = patient_folds(labels, patients, 4, 7)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_too_few_patients_is_clear() -> None:
    with pytest.raises(UserError, match="patients of class 1"):
        patient_folds(np.array([0] * 6 + [1] * 2), np.arange(8).astype(str), 5, 0)


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    m = binary_metrics(y, 1 / (1 + np.exp(-s)), n_boot=50)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bootstrap_ci_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + rng.uniform(size=60) * 0.7, 0, 1)
    m = binary_metrics(y, p, n_boot=300, seed=5)
    # the same percentile bootstrap written out by hand
    r = np.random.default_rng(5)
    stats = []
    while len(stats) < 300:
        idx = r.integers(0, 60, 60)
        if len(np.unique(y[idx])) < 2:
            continue
        stats.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert m["auc_ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert lo < m["auc"] < hi


def test_accuracy_and_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.3, 0.9, 0.4])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    assert balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p >= 0.5))
    one_class = binary_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.6, 0.3]))
    assert one_class["auc"] is None and one_class["accuracy"] == 0.75


def test_binary_metrics_patient_bootstrap_and_repeats() -> None:
    from domainfm.core.metrics import bootstrap_ci

    rng = np.random.default_rng(3)
    patients = np.repeat([f"p{i}" for i in range(20)], 3)
    y = np.repeat(np.arange(20) % 2, 3)
    p = np.clip(0.3 * y + rng.uniform(size=60) * 0.7, 0, 1)
    m = binary_metrics(y, p, n_boot=200, seed=1, groups=patients)
    assert m["ci"] == "patient bootstrap" and m["n_patients"] == 20
    assert m["auc_ci"] == pytest.approx(list(bootstrap_ci(y, p, n_boot=200, seed=1, groups=patients)[1:]))
    two = np.stack([p, np.clip(p + rng.normal(scale=0.2, size=60), 0, 1)])
    r = binary_metrics(y, two, n_boot=100, seed=1, groups=patients)
    assert r["auc"] == pytest.approx(np.mean([roc_auc_score(y, row) for row in two]))
    assert r["accuracy"] == pytest.approx(np.mean([accuracy(y, row) for row in two]))
