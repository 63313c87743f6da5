"""Feature files record the encoder that made them, well enough to rebuild it (what `heatmap` does)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from domainfm.cli import main
from domainfm.pathology import load_encoder
from domainfm.pathology.features import extract as ext
from domainfm.pathology.features.encoders import build_backbone, save_encoder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prov_imgs")
    rng = np.random.default_rng(3)
    for c in ("0", "1"):
        (root / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _rebuilt_features(attrs: dict, folder: Path) -> np.ndarray:
    """Features of the folder's images from the encoder the attributes name (as `heatmap` would rebuild it)."""
    enc = load_encoder(attrs["encoder_spec"], image_size=int(attrs["encoder_image_size"]))
    files = sorted(folder.rglob("*.png"))
    x = torch.stack([enc.transform(Image.open(f)) for f in files])
    with torch.no_grad():
        return enc.model(x).numpy()


def test_pretrain_folder_recorded_by_absolute_path(folder: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from domainfm.pathology.mil.slide_heatmap import encoder_spec
    from domainfm.pathology.mil.store import provenance

    torch.manual_seed(5)
    net, dim = build_backbone("resnet18")
    save_encoder(net, tmp_path / "runs" / "enc", arch="resnet18", embed_dim=dim, image_size=32)
    monkeypatch.chdir(tmp_path / "runs")  # a relative --encoder must still be recorded absolutely
    rc = main(["pathology", "extract", "--encoder", "enc", "--images", str(folder), "-o", str(tmp_path / "f"),
               "--workers", "0", "--device", "cpu"])
    assert rc == 0
    with h5py.File(tmp_path / "f" / "features.h5") as h5:
        attrs = dict(h5.attrs)
        feats = h5["features"][()]
    enc_dir = str((tmp_path / "runs" / "enc").resolve())
    assert attrs["encoder"] == "enc" and attrs["encoder_path"] == enc_dir and attrs["encoder_spec"] == enc_dir
    assert attrs["encoder_arch"] == "resnet18" and attrs["encoder_source"] == "pretrain"
    assert int(attrs["encoder_image_size"]) == 32 and int(attrs["encoder_embed_dim"]) == 512 == feats.shape[1]
    cfg = json.loads(attrs["encoder_config"])
    assert cfg["path"] == enc_dir and cfg["arch"] == "resnet18" and cfg["image_size"] == 32
    monkeypatch.chdir(tmp_path)
    np.testing.assert_allclose(_rebuilt_features(attrs, folder), feats, rtol=1e-5, atol=1e-5)
    # the MIL heatmap finds the same encoder through a model's provenance
    assert encoder_spec({"provenance": provenance(attrs)}) == enc_dir


def test_random_baseline_recorded_by_architecture(folder: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_read_tiles(coords_h5, slide_path=None, batch_size=64):  # noqa: ANN001, ANN202
        with h5py.File(coords_h5) as h5:
            coords = h5["coords"][:]
        files = sorted(folder.rglob("*.png"))
        yield coords, [Image.open(files[i]).convert("RGB") for i in range(len(coords))]

    monkeypatch.setattr(ext, "_read_tiles_fn", lambda: fake_read_tiles)
    (tmp_path / "tiling" / "coords").mkdir(parents=True)
    with h5py.File(tmp_path / "tiling" / "coords" / "s1.h5", "w") as h5:
        h5.create_dataset("coords", data=np.arange(12, dtype=np.int64).reshape(6, 2) * 32)
        h5.attrs["tile_size"] = 32
    enc = load_encoder("resnet18", image_size=32)
    ext.extract_tiles_dir(enc, tmp_path / "tiling", tmp_path / "feats", batch_size=4)
    with h5py.File(tmp_path / "feats" / "s1.h5") as h5:
        attrs = dict(h5.attrs)
        feats = h5["features"][()]
    assert attrs["encoder_spec"] == "resnet18" and "encoder_path" not in attrs
    assert attrs["encoder_source"] == "random-init" and int(attrs["encoder_image_size"]) == 32
    assert int(attrs["encoder_embed_dim"]) == 512 and int(attrs["tile_size"]) == 32  # coords attrs kept
    np.testing.assert_allclose(_rebuilt_features(attrs, folder), feats, rtol=1e-5, atol=1e-5)
    # the name a baseline reports loads the same network back
    again = load_encoder(attrs["encoder"], image_size=32)
    assert torch.equal(again.model.conv1.weight, enc.model.conv1.weight)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "convnext_tiny"])
def test_sequential_heads_report_the_real_width(arch: str) -> None:
    """Headless torchvision models whose classifier is a Sequential give (B, D) with D = embed_dim."""
    net, dim = build_backbone(arch)
    with torch.no_grad():
        y = net.eval()(torch.zeros(2, 3, 32, 32))
    assert y.shape == (2, dim)
