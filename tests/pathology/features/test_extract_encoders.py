"""Encoders (names, weights files, pretrain folders) and feature extraction (ImageFolder, slides)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from domainfm.cli import main
from domainfm.core.errors import UserError
from domainfm.pathology.features import extract as ext
from domainfm.pathology.features.encoders import build_backbone, load_encoder, save_encoder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder with classes 'b_tumour' and 'a_normal' (sorted order: a_normal=0) and one corrupt jpg."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("b_tumour", "a_normal"):
        (root / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    (root / "b_tumour" / "bad.jpg").write_bytes(b"not a jpeg")
    return root


def test_random_baseline_is_seeded_and_sized() -> None:
    a, b = load_encoder("resnet18", image_size=32), load_encoder("resnet18", image_size=32)
    assert a.embed_dim == 512 and a.image_size == 32 and a.config["source"] == "random-init"
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    with pytest.raises(UserError, match="unknown architecture"):
        load_encoder("resnet_doesnotexist")


def test_weights_file_loads_with_prefixes_and_name(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    full = torchvision.models.resnet18(weights=None)  # an "ImageNet-style" checkpoint with its fc head
    path = tmp_path / "resnet18-deadbeef.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    enc = load_encoder(path, image_size=48)
    assert enc.config["arch"] == "resnet18" and enc.config["source"] == "weights-file"
    assert torch.equal(enc.model.conv1.weight, full.conv1.weight)
    odd = tmp_path / "weights.pth"
    torch.save(full.state_dict(), odd)
    with pytest.raises(UserError, match="architecture"):
        load_encoder(odd)
    assert torch.equal(load_encoder(odd, arch="resnet18").model.layer4[1].bn2.weight, full.layer4[1].bn2.weight)
    with pytest.raises(UserError, match="do not fit"):
        load_encoder(odd, arch="resnet34")
    junk = tmp_path / "resnet18-junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_encoder(junk)


def test_encoder_folder_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net, dim = build_backbone("resnet18")
    save_encoder(net, tmp_path / "enc", arch="resnet18", embed_dim=dim, image_size=40, mean=(0.5,) * 3,
                 std=(0.25,) * 3)
    enc = load_encoder(tmp_path / "enc")
    assert enc.image_size == 40 and enc.config["mean"] == [0.5] * 3
    x = torch.rand(2, 3, 40, 40)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(enc.model(x), net(x), atol=1e-6)
    t = enc.transform(Image.new("RGB", (10, 10), (255, 0, 0)))
    assert t.shape == (3, 40, 40) and float(t[0, 0, 0]) == pytest.approx((1 - 0.5) / 0.25)
    with pytest.raises(UserError, match="not an encoder folder"):
        load_encoder(tmp_path)


def test_extract_image_folder(folder: Path, tmp_path: Path) -> None:
    enc = load_encoder("resnet18", image_size=32)
    out = ext.extract_image_folder(enc, folder, tmp_path / "f.h5", batch_size=4)
    with h5py.File(out) as h5:
        feats, labels = h5["features"][:], h5["labels"][:]
        paths = [p.decode() for p in h5["paths"][:]]
        assert list(h5.attrs["classes"]) == ["a_normal", "b_tumour"]
        assert list(h5.attrs["skipped"]) == ["b_tumour/bad.jpg"]  # accounted for, not silently lost
    assert feats.shape == (10, 512) and feats.dtype == np.float32
    assert labels.tolist() == [0] * 5 + [1] * 5
    assert paths[0] == "a_normal/0.jpg" and paths[-1] == "b_tumour/4.jpg"
    # same features as a direct forward pass
    x = enc.transform(Image.open(folder / "a_normal" / "0.jpg"))
    with torch.no_grad():
        assert np.allclose(feats[0], enc.model(x[None]).numpy()[0], atol=1e-4)


def test_cli_extract_images_fp16(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["pathology", "extract", "--encoder", "resnet18", "--images", str(folder), "-o", str(tmp_path),
               "--image-size", "32", "--fp16", "--workers", "0", "--device", "cpu"])
    assert rc == 0
    with h5py.File(tmp_path / "features.h5") as h5:
        assert h5["features"].dtype == np.float16 and h5["features"].shape == (10, 512)
    assert main(["pathology", "extract", "--encoder", "resnet18", "-o", str(tmp_path)]) == 2
    assert "exactly one of" in capsys.readouterr().err


def _fake_tiling(root: Path, n_slides: int = 2) -> Path:
    (root / "coords").mkdir(parents=True)
    for s in range(n_slides):
        with h5py.File(root / "coords" / f"slide{s}.h5", "w") as h5:
            h5.create_dataset("coords", data=np.arange(10 + s * 2, dtype=np.int64).reshape(-1, 2) * 224)
            h5.attrs["tile_size"] = 224
            h5.attrs["slide_id"] = f"slide{s}"
    return root


def test_extract_slides_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_read_tiles(coords_h5, slide_path=None, batch_size=64):  # noqa: ANN001, ANN202
        calls.append(Path(coords_h5).stem)
        with h5py.File(coords_h5) as h5:
            coords = h5["coords"][:]
        for s in range(0, len(coords), batch_size):
            c = coords[s:s + batch_size]
            yield c, [Image.new("RGB", (224, 224), (int(x) % 255, 100, 150)) for x, _ in c]

    monkeypatch.setattr(ext, "_read_tiles_fn", lambda: fake_read_tiles)
    tiling = _fake_tiling(tmp_path / "tiling")
    enc = load_encoder("resnet18", image_size=32)
    status = ext.extract_tiles_dir(enc, tiling, tmp_path / "feats", batch_size=4, num_workers=2)
    assert status == {"slide0": "ok", "slide1": "ok"}
    with h5py.File(tmp_path / "feats" / "slide1.h5") as h5:
        assert h5["features"].shape == (6, 512) and h5["coords"].shape == (6, 2)
        assert h5.attrs["tile_size"] == 224 and h5.attrs["encoder"] == "resnet18-random"
        assert np.array_equal(h5["coords"][:], np.arange(12).reshape(-1, 2) * 224)
    calls.clear()
    (tmp_path / "feats" / "slide0.h5").unlink()
    status = ext.extract_tiles_dir(enc, tiling, tmp_path / "feats", batch_size=4)
    assert calls == ["slide0"] and status["slide1"] == "skipped (done)"
