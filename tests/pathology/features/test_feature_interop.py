"""Feature folders made by CLAM and TRIDENT go straight into `mil train` / `mil predict`; ours read as theirs.

Layouts written here exactly as the tools write them:
* CLAM ``extract_features_fp.py``: ``FEAT_DIR/h5_files/<slide_id>.h5`` from ``save_hdf5(path,
  {'features': (N, D) float32, 'coords': (N, 2)}, attr_dict=None)`` and ``FEAT_DIR/pt_files/<slide_id>.pt``
  = ``torch.save(torch.from_numpy(features))``.
* TRIDENT ``extract_patch_features``: ``JOB/20x_256px_0px_overlap/features_<encoder>/<slide_id>.h5`` with
  ``features`` and ``coords``, the coords file's attributes copied onto ``coords``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from domainfm.cli import main
from domainfm.pathology.features.interop import find_feature_file, read_feature_file
from domainfm.pathology.mil.data import load_cohort

SLIDES = Path(os.environ.get("DOMAINFM_DATA", "/nonexistent")) / "pathology" / "slides"
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"
CMU = SLIDES / "CMU-1-Small-Region.svs"


def _bags(n_slides: int = 12, dim: int = 16, seed: int = 0) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_slides):
        label = i % 2
        n = int(rng.integers(6, 20))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[: max(1, n // 4), 0] += 4.0 * label
        coords = np.stack([np.arange(n) * 512, np.full(n, 1024)], 1).astype(np.int64)
        out.append((f"TCGA-{i:02d}", label, x, coords))
    return out


def _labels(path: Path, bags: list) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "patient_id", "label"])
        for sid, label, _, _ in bags:
            w.writerow([sid, sid[:7], label])
    return path


def _write_clam(root: Path, bags: list, with_h5: bool = True) -> Path:
    (root / "pt_files").mkdir(parents=True)
    if with_h5:
        (root / "h5_files").mkdir()
    for sid, _, x, c in bags:
        if with_h5:
            with h5py.File(root / "h5_files" / f"{sid}.h5", "w") as f:  # CLAM save_hdf5, no attributes
                f.create_dataset("features", data=x, maxshape=(None, x.shape[1]), chunks=(1, x.shape[1]))
                f.create_dataset("coords", data=c, maxshape=(None, 2), chunks=(1, 2))
        torch.save(torch.from_numpy(x), root / "pt_files" / f"{sid}.pt")
    return root


def _write_trident(job: Path, bags: list) -> Path:
    d = job / "20x_256px_0px_overlap" / "features_uni_v1"
    d.mkdir(parents=True)
    for sid, _, x, c in bags:
        with h5py.File(d / f"{sid}.h5", "w") as f:
            f.create_dataset("features", data=x)
            cd = f.create_dataset("coords", data=c)
            cd.attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                             "target_magnification": 20, "overlap": 0, "name": sid,
                             "savetodir": str(job / "20x_256px_0px_overlap"), "level0_width": 40000,
                             "level0_height": 30000})
            f["features"].attrs.update({"name": sid, "savetodir": str(d)})
    return job


def test_clam_and_trident_folders_load(tmp_path: Path) -> None:
    bags = _bags()
    labels = _labels(tmp_path / "labels.csv", bags)
    clam = _write_clam(tmp_path / "clam", bags)
    pt_only = _write_clam(tmp_path / "clam_pt", bags, with_h5=False)
    trident = _write_trident(tmp_path / "trident_job", bags)
    for folder in (clam, pt_only, trident, trident / "20x_256px_0px_overlap" / "features_uni_v1"):
        cohort = load_cohort(folder, labels)
        assert len(cohort) == len(bags) and not cohort.dropped, folder
        for (_sid, _, x, c), got, gc in zip(bags, cohort.features, cohort.coords, strict=True):
            assert np.array_equal(got, x)
            if folder != pt_only:
                assert np.array_equal(gc, c)
    assert find_feature_file(clam, "TCGA-00").parent.name == "h5_files"  # the .h5 (with coords) wins
    assert read_feature_file(find_feature_file(trident, "TCGA-03")).attrs["level0_tile_size"] == 512.0


def test_mil_train_and_predict_on_clam_and_trident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bags = _bags()
    labels = _labels(tmp_path / "labels.csv", bags)
    clam = _write_clam(tmp_path / "clam", bags)
    trident = _write_trident(tmp_path / "trident_job", _bags(seed=1))
    rc = main(["pathology", "mil", "train", "--features", str(clam), "--labels", str(labels), "--model", "meanpool",
               "-o", str(tmp_path / "m"), "--epochs", "3", "--folds", "2", "--inner-folds", "0", "--n-boot", "10"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    rc = main(["pathology", "mil", "predict", "--model", str(tmp_path / "m"), "--features", str(trident),
               "-o", str(tmp_path / "p.csv")])
    assert rc == 0, capsys.readouterr().err
    with open(tmp_path / "p.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["slide_id"] for r in rows) == sorted(b[0] for b in bags)
    if not CMU.is_file():
        return
    # heatmap from a TRIDENT folder (tile width from patch_size_level0) and a CLAM one (from the grid step)
    gy, gx = np.mgrid[0:2967 - 256:256, 0:2220 - 256:256]
    coords = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int64)
    x = np.random.default_rng(2).normal(size=(len(coords), 16)).astype(np.float32)
    x[:, 0] = coords[:, 0] / 500.0  # tiles on the right score higher
    sid = "CMU-1-Small-Region"
    for name, writer, want, tile0 in (("trident", _write_trident, "file attributes", 512),
                                      ("clam", _write_clam, "grid step of the coordinates", 256)):
        folder = writer(tmp_path / f"{name}_cmu", [(sid, 1, x, coords)])
        rc = main(["pathology", "heatmap", "--model", str(tmp_path / "m"), "--slide", str(CMU), "--features",
                   str(folder), "-o", str(tmp_path / f"heat_{name}")])
        assert rc == 0, capsys.readouterr().err
        res = json.loads((tmp_path / f"heat_{name}" / f"{sid}_heatmap.json").read_text())
        assert res["n_tiles"] == len(coords) and res["level0_tile_size"] == tile0 and res["tile_size_from"] == want
        assert Path(res["heatmap"]).is_file() and Path(res["geojson"]).is_file()


@pytest.mark.skipif(not TCGA.is_file(), reason="needs $DOMAINFM_DATA/pathology/slides")
def test_our_extract_in_trident_and_clam_layouts(tmp_path: Path) -> None:
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_slide_features
    from domainfm.pathology.slides import TileConfig, tile_slide

    tile_slide(TCGA, tmp_path / "t", TileConfig(target_mpp=2.0, tile_size=64, slide_mpp=0.25, min_tissue=0.3))
    coords_h5 = tmp_path / "t" / "coords" / "TCGA-CR-7395-01A-01-TS1.h5"
    enc = load_encoder("resnet18", image_size=32)
    ours = extract_slide_features(enc, coords_h5, tmp_path / "f" / "TCGA-CR-7395-01A-01-TS1.h5", batch_size=16)
    with h5py.File(ours, "r") as f:  # what TRIDENT's slide encoders / CLAM's h5 loader read
        feats, coords = f["features"][()], f["coords"][()]
        a = dict(f["coords"].attrs)
        assert f.attrs["encoder"] == "resnet18-random"
    assert feats.shape == (len(coords), 512) and a["patch_size_level0"] == 512 and a["patch_level"] == 1
    assert main(["pathology", "extract", "--tiles", str(tmp_path / "t"), "--encoder", "resnet18", "--image-size",
                 "32", "--layout", "clam", "--batch-size", "16", "--device", "cpu", "-o", str(tmp_path / "clam")]) == 0
    h5p = tmp_path / "clam" / "h5_files" / "TCGA-CR-7395-01A-01-TS1.h5"
    pt = torch.load(tmp_path / "clam" / "pt_files" / "TCGA-CR-7395-01A-01-TS1.pt", weights_only=True)
    assert isinstance(pt, torch.Tensor) and pt.shape == feats.shape
    assert np.allclose(pt.numpy(), feats, atol=1e-5)
    with h5py.File(h5p, "r") as f:
        assert np.array_equal(f["coords"][()], coords) and f["coords"].attrs["patch_level"] == 1


@pytest.mark.skipif(not TCGA.is_file(), reason="needs $DOMAINFM_DATA/pathology/slides")
def test_extract_from_clam_and_trident_patch_folders(tmp_path: Path) -> None:
    """`extract --tiles` on CLAM's create_patches_fp output (patches/<id>.h5) and TRIDENT's job folder
    (<cfg>/patches/<id>_patches.h5), slides matched by id in --slides."""
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / TCGA.name).symlink_to(TCGA)
    sid = TCGA.stem
    coords = np.array([[1024, 1024], [1536, 1024], [2048, 1536]], dtype=np.int64)
    clam = tmp_path / "clam_out" / "patches"
    clam.mkdir(parents=True)
    with h5py.File(clam / f"{sid}.h5", "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_size": 128, "patch_level": 1, "downsample": (2.0005, 2.0005),
                        "downsampled_level_dim": (2221, 1783), "level_dim": (2221, 1783), "name": sid,
                        "save_path": str(clam)})
    trident = tmp_path / "job" / "20x_64px_0px_overlap" / "patches"
    trident.mkdir(parents=True)
    with h5py.File(trident / f"{sid}_patches.h5", "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_size": 64, "patch_size_level0": 128, "level0_magnification": 40,
                        "target_magnification": 20, "overlap": 0, "name": sid, "savetodir": str(trident.parent),
                        "level0_width": 4443, "level0_height": 3567})
    for src, out in ((tmp_path / "clam_out", tmp_path / "f_clam"), (tmp_path / "job", tmp_path / "f_trident")):
        rc = main(["pathology", "extract", "--tiles", str(src), "--slides", str(slides), "--encoder", "resnet18",
                   "--image-size", "32", "--device", "cpu", "-o", str(out)])
        assert rc == 0
        feats = read_feature_file(out / f"{sid}.h5")
        assert feats.features.shape == (3, 512) and np.array_equal(feats.coords, coords)
    assert read_feature_file(tmp_path / "f_clam" / f"{sid}.h5").attrs["patch_level"] == 1
    assert read_feature_file(tmp_path / "f_trident" / f"{sid}.h5").attrs["level0_tile_size"] == 128.0
