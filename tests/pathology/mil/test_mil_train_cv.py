"""Training learns, nested CV is honest and resumable, the final model saves, reloads and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mil_helpers import write_cohort

from domainfm.pathology.mil.cv import CVConfig, nested_cv, train_and_evaluate
from domainfm.pathology.mil.data import collate, load_cohort
from domainfm.pathology.mil.store import load_mil_model
from domainfm.pathology.mil.train import TrainConfig, fit, predict

FAST = {"epochs": 30, "batch_size": 8, "n_boot": 100, "hidden": 16}


def test_collate_pads_masks_and_caps() -> None:
    bags = [np.ones((3, 4), np.float32), 2 * np.ones((7, 4), np.float32)]
    x, m = collate(bags)
    assert x.shape == (2, 7, 4) and m.sum(1).tolist() == [3, 7]
    assert float(x[0, 3:].abs().sum()) == 0
    x, m = collate(bags, max_tiles=5, rng=np.random.default_rng(0))
    assert x.shape == (2, 5, 4) and m.sum(1).tolist() == [3, 5]


@pytest.mark.parametrize("name", ["chowder", "abmil", "dsmil", "clam-sb"])
def test_fit_learns_the_witness_tiles(tmp_path: Path, name: str) -> None:
    feats, labels = write_cohort(tmp_path, n_slides=40, seed=1)
    co = load_cohort(feats, labels)
    model = fit(co.features, co.labels, TrainConfig(model=name, epochs=30, batch_size=8, hidden=16, lr=5e-3, seed=0))
    p, tiles = predict(model, co.features)
    assert ((p >= 0.5) == co.labels).mean() >= 0.9
    assert [len(t) for t in tiles] == [len(x) for x in co.features]
    # the same seed gives the same model
    again = fit(co.features, co.labels, TrainConfig(model=name, epochs=30, batch_size=8, hidden=16, lr=5e-3, seed=0))
    np.testing.assert_allclose(predict(again, co.features)[0], p, rtol=1e-6)


def test_nested_cv_save_load_predict(tmp_path: Path) -> None:
    feats, labels = write_cohort(tmp_path / "cv", n_slides=24, seed=0)
    efeats, elabels = write_cohort(tmp_path / "ext", n_slides=12, seed=9, prefix="e")
    co, ext = load_cohort(feats, labels), load_cohort(efeats, elabels)
    cfg = CVConfig(model="chowder", folds=3, inner_folds=2, repeats=1, grid_lr="1e-2,3e-2", grid_wd="0", **FAST)
    out = tmp_path / "model"
    res = train_and_evaluate(co, cfg, out, {"ext": ext}, {"features": str(feats)})
    assert len(res["folds"]) == 3 and all(f["lr"] in (1e-2, 3e-2) for f in res["folds"])
    assert all(len(f["inner"]) == 2 for f in res["folds"])
    assert res["cv_pooled"]["auc"] > 0.8 and res["external"]["ext"]["ensemble"]["auc"] > 0.8
    for name in ("results.json", "results.md", "roc_cv.png", "roc_external_ext.png", "predictions_cv.csv",
                 "predictions_external_ext.csv", "model.safetensors", "model.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["n_slides"] == 24
    assert "CV pooled" in (out / "results.md").read_text()
    model, meta = load_mil_model(out)
    assert meta["model"] == "chowder" and meta["provenance"]["encoder"] == "toy-encoder"
    p, _ = predict(model, ext.features)
    np.testing.assert_allclose(p, res["external"]["ext"]["final_scores"], rtol=1e-5)


def test_cv_resumes_from_cached_folds(tmp_path: Path) -> None:
    feats, labels = write_cohort(tmp_path, n_slides=16, seed=2)
    co = load_cohort(feats, labels)
    cfg = CVConfig(model="meanpool", folds=2, inner_folds=0, **FAST)
    first = nested_cv(co, cfg, out_dir=tmp_path / "run")
    cached = sorted(Path(first["cache"]).glob("r*_f*.json"))
    assert len(cached) == 2
    # a killed run: one fold lost; the rerun recomputes it and gives the same numbers
    cached[1].unlink()
    again = nested_cv(co, cfg, out_dir=tmp_path / "run")
    np.testing.assert_allclose(np.concatenate([r["test_scores"] for r in again["records"]]),
                               np.concatenate([r["test_scores"] for r in first["records"]]), rtol=1e-6)
    # a different config is a different fingerprint, not a stale cache hit
    other = nested_cv(co, CVConfig(model="maxpool", folds=2, inner_folds=0, **FAST), out_dir=tmp_path / "run")
    assert other["cache"] != first["cache"]


def test_cv_cache_key_holds_every_parameter_and_refuses_others(tmp_path: Path) -> None:
    from domainfm.core.errors import UserError
    from domainfm.pathology.mil.cv import cache_key

    feats, labels = write_cohort(tmp_path, n_slides=16, seed=2)
    co = load_cohort(feats, labels)
    cfg = CVConfig(model="chowder", folds=2, inner_folds=0, **FAST)
    key = cache_key(co, {}, cfg)
    # the model's own hyper-parameters (defaults included) and the feature bytes are part of the key
    assert key["model_hparams"]["n_ensemble"] == 10 and key["model_hparams"]["n_extreme"] == 5
    co2 = load_cohort(feats, labels)
    co2.features[3] = co2.features[3] + 1e-3  # other features, same shapes, ids and labels
    assert cache_key(co2, {}, cfg)["data"] != key["data"]
    assert {f for f in key["config"]} >= {"model", "epochs", "lr", "hidden", "dropout", "max_tiles", "seed"}
    # a cache folder whose key.json says otherwise is refused, not reused
    run = nested_cv(co, CVConfig(model="meanpool", folds=2, inner_folds=0, **FAST), out_dir=tmp_path / "run")
    key_file = Path(run["cache"]) / "key.json"
    k = json.loads(key_file.read_text())
    k["config"]["epochs"] = 1
    key_file.write_text(json.dumps(k))
    with pytest.raises(UserError, match="other parameters .*config"):
        nested_cv(co, CVConfig(model="meanpool", folds=2, inner_folds=0, **FAST), out_dir=tmp_path / "run")
    key_file.unlink()  # folds of an older version: unknown parameters
    with pytest.raises(UserError, match="unknown parameters"):
        nested_cv(co, CVConfig(model="meanpool", folds=2, inner_folds=0, **FAST), out_dir=tmp_path / "run")


def test_refuses_external_cohort_sharing_a_patient(tmp_path: Path) -> None:
    from domainfm.core.errors import UserError

    feats, labels = write_cohort(tmp_path / "cv", n_slides=12, seed=0)
    efeats, elabels = write_cohort(tmp_path / "ext", n_slides=6, seed=9, prefix="e")
    co, ext = load_cohort(feats, labels), load_cohort(efeats, elabels)
    ext.slides[2].patient_id = co.slides[5].patient_id  # one patient on both sides
    cfg = CVConfig(model="meanpool", folds=2, inner_folds=0, **FAST)
    with pytest.raises(UserError, match="shares 1 patient\\(s\\) with the CV cohort"):
        train_and_evaluate(co, cfg, tmp_path / "m", {"ext": ext})
    assert not (tmp_path / "m" / "cv").exists()  # refused before any training


def test_missing_feature_file_is_accounted_for(tmp_path: Path) -> None:
    feats, labels = write_cohort(tmp_path, n_slides=10)
    (feats / "s003.h5").unlink()
    co = load_cohort(feats, labels)
    assert len(co) == 9 and co.dropped == [{"slide_id": "s003", "reason": "no feature file"}]


def test_pooled_cv_over_repeats_is_per_repeat_then_combined(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from domainfm.pathology.mil.cv import summarise

    feats, labels = write_cohort(tmp_path, n_slides=20, seed=3)
    co = load_cohort(feats, labels)
    cfg = CVConfig(model="meanpool", folds=2, repeats=2, n_boot=50)
    rng = np.random.default_rng(0)
    y = co.labels
    scores = np.clip(0.4 * y + rng.uniform(size=(2, len(y))) * 0.6, 0, 1)  # two repeats' OOF scores
    half = np.arange(len(y)) % 2
    records = [{"repeat": r, "fold": f, "lr": 1e-3, "weight_decay": 0.0, "inner": [],
                "test_idx": np.flatnonzero(half == f).tolist(),
                "test_scores": scores[r, half == f].tolist(), "external_scores": {}}
               for r in range(2) for f in range(2)]
    res = summarise(co, cfg, records, {}, {})
    per_repeat = [roc_auc_score(y, scores[r]) for r in range(2)]
    assert res["cv_pooled"]["auc"] == pytest.approx(np.mean(per_repeat))
    assert res["cv_pooled"]["auc"] != pytest.approx(roc_auc_score(y, scores.mean(0)), abs=1e-4)
    assert res["cv_pooled"]["ci"] == "patient bootstrap" and res["cv_pooled"]["n_patients"] == 10
    assert [r["auc"] for r in res["cv_pooled_per_repeat"]] == pytest.approx(per_repeat)
