"""The CLI in-process: bags, mil list/train/predict, and one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mil_helpers import write_cohort, write_labelled_h5

from domainfm.cli import main


def test_bags_then_train_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_labelled_h5(tmp_path / "train.h5", n_neg=400, n_pos=120, seed=0)
    valid = write_labelled_h5(tmp_path / "valid.h5", n_neg=200, n_pos=60, seed=1)
    assert main(["pathology", "bags", str(train), "-o", str(tmp_path / "bags"), "--n-bags", "20",
                 "--bag-size", "16", "--positive-fraction", "0.1", "0.3", "--seed", "0"]) == 0
    assert main(["pathology", "bags", str(valid), "-o", str(tmp_path / "ext"), "--n-bags", "10",
                 "--bag-size", "16", "--positive-fraction", "0.1", "0.3", "--seed", "1", "--prefix", "ext"]) == 0
    assert "20 bags (10 positive)" in capsys.readouterr().out
    rc = main(["pathology", "mil", "train", "--features", str(tmp_path / "bags"),
               "--labels", str(tmp_path / "bags" / "labels.csv"), "--model", "abmil", "-o", str(tmp_path / "m"),
               "--external-features", str(tmp_path / "ext"), "--external-labels",
               str(tmp_path / "ext" / "labels.csv"), "--epochs", "10", "--folds", "2", "--inner-folds", "0",
               "--n-boot", "50", "--hidden", "16"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "abmil: CV AUC" in out and "external external AUC" in out
    rc = main(["pathology", "mil", "predict", "--model", str(tmp_path / "m"), "--features", str(tmp_path / "ext"),
               "-o", str(tmp_path / "preds.csv")])
    assert rc == 0
    with open(tmp_path / "preds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and set(rows[0]) == {"slide_id", "score"}
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)


def test_cohort_column_gives_external(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = write_cohort(tmp_path / "a", n_slides=12, cohort="A")
    text_a = labels.read_text()
    _, labels_b = write_cohort(tmp_path / "a", n_slides=8, cohort="B", prefix="b", seed=3)
    # one CSV, two cohorts, one features folder
    text = text_a + "".join(labels_b.read_text().splitlines(True)[1:])
    (tmp_path / "all.csv").write_text(text)
    rc = main(["pathology", "mil", "train", "--features", str(feats), "--labels", str(tmp_path / "all.csv"),
               "--model", "meanpool", "-o", str(tmp_path / "m"), "--epochs", "5", "--folds", "2",
               "--inner-folds", "0", "--n-boot", "20"])
    out = capsys.readouterr().out
    assert rc == 0 and "cross-validating on 'A', external: B" in out and "external B AUC" in out


def test_list_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pathology", "mil", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("abmil", "chowder", "dsmil", "maxpool", "meanpool"):
        assert name in out
    rc = main(["pathology", "mil", "train", "--features", str(tmp_path), "--labels", str(tmp_path / "no.csv"),
               "--model", "chowder", "-o", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "labels CSV not found" in err and "Traceback" not in err
    rc = main(["pathology", "mil", "train", "--features", str(tmp_path), "--labels", str(tmp_path / "no.csv"),
               "--model", "nope", "-o", str(tmp_path / "m")])
    assert rc == 2 and "known: abmil" in capsys.readouterr().err
    rc = main(["pathology", "mil", "predict", "--model", str(tmp_path), "--features", str(tmp_path),
               "-o", str(tmp_path / "p.csv")])
    assert rc == 2 and "not a MIL model folder" in capsys.readouterr().err
