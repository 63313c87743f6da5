"""PCam-bags builder: composition as configured, determinism, no tile in two bags or two splits."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from mil_helpers import write_labelled_h5

from domainfm.core.errors import UserError
from domainfm.pathology.mil.bags import BagsConfig, build_bags, grid_coords


def _read_bags(d: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(d.glob("*.h5")):
        with h5py.File(p, "r") as f:
            out[p.stem] = {"features": f["features"][()], "coords": f["coords"][()],
                           "idx": f["source_indices"][()], "tl": f["tile_labels"][()],
                           "paths": [x.decode() for x in f["paths"][()]], "attrs": dict(f.attrs)}
    return out


def test_composition_as_configured(labelled_h5: Path, tmp_path: Path) -> None:
    cfg = BagsConfig(n_bags=20, bag_size=16, positive_fraction=(0.1, 0.3), seed=3, slides_per_patient=2)
    m = build_bags(labelled_h5, tmp_path / "bags", cfg)
    bags = _read_bags(tmp_path / "bags")
    assert len(bags) == 20 and m["n_positive_bags"] == 10
    with open(tmp_path / "bags" / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["slide_id"] for r in rows] == sorted(bags)
    assert set(rows[0]) == {"slide_id", "patient_id", "label"}
    assert len({r["patient_id"] for r in rows}) == 10
    with h5py.File(labelled_h5) as f:
        src_feats, src_labels = f["features"][()], f["labels"][()]
    all_idx = []
    for r in rows:
        b = bags[r["slide_id"]]
        assert b["features"].shape == (16, 8)
        np.testing.assert_array_equal(b["features"], src_feats[b["idx"]])
        np.testing.assert_array_equal(b["tl"], src_labels[b["idx"]])
        frac = b["tl"].mean()
        if r["label"] == "1":
            assert 1 <= b["tl"].sum() and 0.1 - 1 / 16 <= frac <= 0.3 + 1 / 16
        else:
            assert frac == 0
        assert int(b["attrs"]["label"]) == int(r["label"])
        all_idx += b["idx"].tolist()
    assert len(all_idx) == len(set(all_idx)) == 20 * 16  # no tile in two bags


def test_deterministic_and_seed_dependent(labelled_h5: Path, tmp_path: Path) -> None:
    cfg = BagsConfig(n_bags=6, bag_size=10, seed=1)
    build_bags(labelled_h5, tmp_path / "a", cfg)
    build_bags(labelled_h5, tmp_path / "b", cfg)
    build_bags(labelled_h5, tmp_path / "c", BagsConfig(n_bags=6, bag_size=10, seed=2))
    a, b, c = (_read_bags(tmp_path / x) for x in "abc")
    assert all(np.array_equal(a[k]["idx"], b[k]["idx"]) for k in a)
    assert any(not np.array_equal(a[k]["idx"], c[k]["idx"]) for k in a)


def test_no_patch_in_two_splits(tmp_path: Path) -> None:
    train = write_labelled_h5(tmp_path / "train.h5", seed=0, prefix="train_")
    valid = write_labelled_h5(tmp_path / "valid.h5", seed=1, prefix="valid_")
    build_bags(train, tmp_path / "cv", BagsConfig(n_bags=10, bag_size=12, seed=0))
    build_bags(valid, tmp_path / "ext", BagsConfig(n_bags=10, bag_size=12, seed=0, prefix="ext", cohort="valid"))
    p_cv = {p for b in _read_bags(tmp_path / "cv").values() for p in b["paths"]}
    p_ext = {p for b in _read_bags(tmp_path / "ext").values() for p in b["paths"]}
    assert p_cv and p_ext and not (p_cv & p_ext)
    assert all(p.split("/")[1].startswith("train_") for p in p_cv)
    with open(tmp_path / "ext" / "labels.csv") as fh:
        assert {r["cohort"] for r in csv.DictReader(fh)} == {"valid"}


def test_duplicates_never_in_two_bags(tmp_path: Path) -> None:
    src = write_labelled_h5(tmp_path / "dup.h5", n_neg=100, n_pos=40, dup=10)
    m = build_bags(src, tmp_path / "bags", BagsConfig(n_bags=8, bag_size=12, positive_fraction=(0.2, 0.5)))
    assert m["n_duplicates_dropped"] == 10
    rows = [r.tobytes() for b in _read_bags(tmp_path / "bags").values() for r in b["features"]]
    assert len(rows) == len(set(rows))


def test_synthetic_grid_coords() -> None:
    c = grid_coords(10, 96)
    assert c.shape == (10, 2) and c.dtype == np.int64
    assert c[0].tolist() == [0, 0] and c[3].tolist() == [3 * 96, 0] and c[5].tolist() == [96, 96]
    assert len({tuple(r) for r in c}) == 10


def test_clear_errors(labelled_h5: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not enough tiles"):
        build_bags(labelled_h5, tmp_path / "x", BagsConfig(n_bags=100, bag_size=64))
    with pytest.raises(UserError, match="positive-fraction"):
        build_bags(labelled_h5, tmp_path / "x", BagsConfig(positive_fraction=(0.5, 0.1)))
    with pytest.raises(UserError, match="positive class"):
        build_bags(labelled_h5, tmp_path / "x", BagsConfig(n_bags=2, bag_size=2, positive_class="tumour"))
    with pytest.raises(UserError, match="not found"):
        build_bags(tmp_path / "missing.h5", tmp_path / "x", BagsConfig())
