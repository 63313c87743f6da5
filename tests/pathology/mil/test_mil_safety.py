"""Runs that would mix what must not be mixed are refused with one line: feature files of different
encoders (train, external cohort, predict), bag folders and cached probe features made with other
parameters. (Shared patients and CV cache keys: test_mil_train_cv.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
from mil_helpers import write_cohort, write_labelled_h5

from domainfm.cli import main
from domainfm.core.errors import UserError

# the attributes features/extract.py `encoder_attrs` writes, for two real encoders
MOCO = {"encoder": "moco_pcam", "encoder_spec": "/runs/moco_pcam", "encoder_path": "/runs/moco_pcam",
        "encoder_arch": "resnet18", "encoder_image_size": 96, "encoder_embed_dim": 8, "encoder_source": "moco"}
RANDOM = {"encoder": "resnet18-random", "encoder_spec": "resnet18", "encoder_arch": "resnet18",
          "encoder_image_size": 96, "encoder_embed_dim": 8, "encoder_source": "random-init"}


def _stamp(feats_dir: Path, attrs: dict, only: list[str] | None = None) -> None:
    for p in sorted(feats_dir.glob("*.h5")):
        if only is None or p.stem in only:
            with h5py.File(p, "a") as f:
                f.attrs.update(attrs)


def _train(feats: Path, labels: Path, out: Path, *extra: str) -> int:
    return main(["pathology", "mil", "train", "--features", str(feats), "--labels", str(labels), "--model", "meanpool",
                 "-o", str(out), "--epochs", "2", "--folds", "2", "--inner-folds", "0", "--n-boot", "20", *extra])


def test_train_refuses_feature_files_of_two_encoders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = write_cohort(tmp_path / "cv", n_slides=12)
    _stamp(feats, MOCO)
    _stamp(feats, RANDOM, only=["s004"])
    assert _train(feats, labels, tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert "different encoders" in err and "s004" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m" / "cv").exists()


def test_train_refuses_an_external_cohort_of_another_encoder(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = write_cohort(tmp_path / "cv", n_slides=12)
    efeats, elabels = write_cohort(tmp_path / "ext", n_slides=6, prefix="e", seed=4)
    _stamp(feats, MOCO)
    _stamp(efeats, RANDOM)
    assert _train(feats, labels, tmp_path / "m", "--external-features", str(efeats),
                  "--external-labels", str(elabels)) == 2
    assert "different encoders" in capsys.readouterr().err


def test_predict_refuses_features_of_another_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = write_cohort(tmp_path / "cv", n_slides=12)
    _stamp(feats, MOCO)
    assert _train(feats, labels, tmp_path / "m") == 0
    other, _ = write_cohort(tmp_path / "new", n_slides=4, prefix="n", seed=5)
    _stamp(other, RANDOM)
    capsys.readouterr()
    rc = main(["pathology", "mil", "predict", "--model", str(tmp_path / "m"), "--features", str(other),
               "-o", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "another encoder" in err and "encoder" in err and not (tmp_path / "p.csv").exists()
    _stamp(other, MOCO)  # the same encoder is scored
    assert main(["pathology", "mil", "predict", "--model", str(tmp_path / "m"), "--features", str(other),
                 "-o", str(tmp_path / "p.csv")]) == 0


def test_bags_folder_made_with_other_parameters_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_labelled_h5(tmp_path / "f.h5")
    args = ["pathology", "bags", str(src), "-o", str(tmp_path / "bags"), "--bag-size", "8", "--seed", "0"]
    assert main([*args, "--n-bags", "10"]) == 0
    assert main([*args, "--n-bags", "10"]) == 0  # same parameters: deterministic rebuild
    assert main([*args, "--n-bags", "6"]) == 2
    assert "other parameters (n_bags differ)" in capsys.readouterr().err


def test_probe_feature_cache_holds_every_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's cached features are keyed by encoder, images and subset; other ones are refused."""
    import domainfm.pathology.features.encoders as encoders
    import domainfm.pathology.features.extract as extract
    from domainfm.pathology.features.probe import ProbeConfig, _encoder_features

    calls = []

    def fake_extract(enc, folder, target, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(kw)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(b"features")

    enc = SimpleNamespace(name="resnet18-random", image_size=32, config={"arch": "resnet18", "source": "random-init"})
    monkeypatch.setattr(encoders, "load_encoder", lambda spec, **kw: enc)
    monkeypatch.setattr(extract, "extract_image_folder", fake_extract)
    split = tmp_path / "train"
    split.mkdir()
    cfg = ProbeConfig(seed=0)
    first, _ = _encoder_features("resnet18", str(split), tmp_path / "cache", 32, cfg, 100)
    again, _ = _encoder_features("resnet18", str(split), tmp_path / "cache", 32, cfg, 100)
    assert first == again and len(calls) == 1  # same parameters: reused
    with pytest.raises(UserError, match="other parameters \\(max_per_class differ\\)"):
        _encoder_features("resnet18", str(split), tmp_path / "cache", 32, cfg, 50)
    with pytest.raises(UserError, match="other parameters \\(seed differ\\)"):
        _encoder_features("resnet18", str(split), tmp_path / "cache", 32, ProbeConfig(seed=1), 100)
    enc.config = {"arch": "resnet18", "source": "moco", "path": "/runs/other"}  # another encoder, same name
    with pytest.raises(UserError, match="encoder_config"):
        _encoder_features("resnet18", str(split), tmp_path / "cache", 32, cfg, 100)
