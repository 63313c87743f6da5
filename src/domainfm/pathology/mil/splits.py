"""Patient-level stratified k-fold splits: all slides of a patient fall on the same side."""

from __future__ import annotations

import numpy as np

from domainfm.core.errors import UserError


def patient_folds(labels: np.ndarray, patients: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, test_idx) pairs over slides, grouped by patient and stratified by label.

    The patient label used for stratification is the max of its slides' labels (a patient with one
    positive slide is a positive patient). Fails clearly when a class has fewer patients than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    patients = np.asarray(patients)
    if k < 2:
        raise UserError(f"need at least 2 folds, got {k}")
    pat_ids, inv = np.unique(patients, return_inverse=True)
    pat_label = np.zeros(len(pat_ids), dtype=int)
    np.maximum.at(pat_label, inv, labels.astype(int))
    for cls in (0, 1):
        n = int((pat_label == cls).sum())
        if n < k:
            raise UserError(f"{k}-fold CV needs at least {k} patients of class {cls}; there are {n}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    # stratify on the patient label broadcast to its slides, group on the patient
    folds = []
    for tr, te in splitter.split(np.zeros(len(labels)), pat_label[inv], groups=inv):
        folds.append((np.sort(tr), np.sort(te)))
    return folds
