"""Linear probe and kNN against references; the probe command on tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainfm.cli import main
from domainfm.pathology.features.probe import knn_loo_accuracy, knn_scores, probe_features


def reference_knn(train_x, train_y, test_x, k, t, c):  # noqa: ANN001, ANN201
    out = []
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    for row in test_x:
        sims = a @ (row / np.linalg.norm(row))
        top = np.argsort(-sims)[:k]
        votes = np.zeros(c)
        for j in top:
            votes[train_y[j]] += np.exp(sims[j] / t)
        out.append(votes / votes.sum())
    return np.asarray(out)


def test_knn_matches_reference() -> None:
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    xte = rng.normal(size=(7, 6))
    got = knn_scores(xtr, ytr, xte, k=5, temperature=0.1, n_classes=3, chunk=3)
    assert np.allclose(got, reference_knn(xtr, ytr, xte, 5, 0.1, 3))


def test_knn_leave_one_out_excludes_self() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4))
    y = rng.integers(0, 2, 40)
    # with k=1 and self included the accuracy would be 1.0; leave-one-out is about chance on noise
    assert knn_loo_accuracy(x, y, k=1) < 0.8


def test_probe_separates_informative_features_only() -> None:
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 2, 300), rng.integers(0, 2, 200)
    informative = lambda y: rng.normal(size=(len(y), 8)) + 2.0 * y[:, None]  # noqa: E731
    good = probe_features((informative(y_tr), y_tr), (informative(y_te), y_te), k=10)
    assert good["linear"]["auc"] > 0.95 and good["knn"]["auc"] > 0.9 and good["linear"]["accuracy"] > 0.85
    noise = probe_features((rng.normal(size=(300, 8)), y_tr), (rng.normal(size=(200, 8)), y_te), k=10)
    assert 0.35 < noise["linear"]["auc"] < 0.65


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("valid", 8)):
        for c, base in ((0, 220), (1, 60)):
            d = root / split / str(c)
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(base + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root / "train", root / "valid"


def test_probe_cli_side_by_side(splits: tuple[Path, Path], tmp_path: Path) -> None:
    train, valid = splits
    rc = main(["pathology", "probe", "--train", str(train), "--test", str(valid), "--encoder", "resnet18",
               "--encoder", "resnet34", "--image-size", "32", "--embedding", "tsne", "--embedding-points", "16",
               "--knn-k", "5", "--workers", "0", "-o", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["encoders"]) == {"resnet18-random", "resnet34-random"}
    r = res["encoders"]["resnet18-random"]
    assert r["n_train"] == 32 and r["n_test"] == 16 and r["dim"] == 512
    assert r["linear"]["auc"] > 0.9  # dark vs light tiles: even random features separate them
    assert "| resnet34-random |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "embedding.png").stat().st_size > 1000
    # features were cached: a second run reuses them
    h5s = sorted((tmp_path / "features").rglob("*.h5"))
    assert len(h5s) == 4
    mtimes = [p.stat().st_mtime_ns for p in h5s]
    assert main(["pathology", "probe", "--train", str(train), "--test", str(valid), "--encoder", "resnet18",
                 "--encoder", "resnet34", "--image-size", "32", "--embedding", "none", "-o", str(tmp_path)]) == 0
    assert [p.stat().st_mtime_ns for p in h5s] == mtimes


def test_probe_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pathology", "probe", "--train", "a", "-o", str(tmp_path)]) == 2
    assert main(["pathology", "probe", "--train", "a.h5", "--test", "b.h5", "-o", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
