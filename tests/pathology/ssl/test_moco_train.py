"""A tiny MoCo v2 run end to end on CPU: encoder files, round-trip, kNN monitor, exact resume, CLI errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from domainfm.cli import main
from domainfm.pathology import load_encoder
from domainfm.pathology.ssl.config import MocoConfig
from domainfm.pathology.ssl.train import pretrain


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny labelled ImageFolder: class 0 pinkish, class 1 purple, 12 tiles each, nested one level deeper."""
    root = tmp_path_factory.mktemp("tiles")
    rng = np.random.default_rng(0)
    for c, base in ((0, (230, 160, 200)), (1, (110, 60, 160))):
        d = root / str(c) / "sub"
        d.mkdir(parents=True)
        for i in range(12):
            arr = np.clip(np.asarray(base) + rng.normal(0, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"t{i}.png")
    return root


def cfg_for(tiles: Path, out: Path, **kw) -> MocoConfig:
    base = MocoConfig(tiles=str(tiles), output=str(out), backbone="resnet18", image_size=32, batch_size=8,
                      queue_size=32, max_steps=4, workers=0, device="cpu", checkpoint_every=100, seed=3)
    return replace(base, **kw)


def test_tiny_run_writes_a_loadable_encoder(tiles: Path, tmp_path: Path) -> None:
    out = pretrain(cfg_for(tiles, tmp_path / "enc", val_dir=str(tiles), epochs=1, max_steps=0))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "resnet18" and cfg["embed_dim"] == 512 and cfg["image_size"] == 32
    assert cfg["mean"] == pytest.approx([0.485, 0.456, 0.406]) and cfg["method"] == "moco_v2"
    assert cfg["steps"] == 3  # 24 images // 8 per step
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["loss"]) == 3 and all(np.isfinite(hist["loss"]))
    assert len(hist["knn"]) == 1 and 0.0 <= hist["knn"][0]["accuracy"] <= 1.0 and hist["knn"][0]["n"] == 24
    assert (out / "loss_curve.png").stat().st_size > 1000
    enc = load_encoder(out)
    assert enc.embed_dim == 512 and enc.image_size == 32
    # the saved weights are the trained query backbone, not a fresh init
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    trained = {k[len("encoder_q.0."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder_q.0.")}
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, trained[k]), k
    x = enc.transform(Image.open(next(tiles.rglob("*.png"))))
    assert x.shape == (3, 32, 32)
    with torch.no_grad():
        assert enc.model(x[None]).shape == (1, 512)


def test_resume_continues_exactly(tiles: Path, tmp_path: Path) -> None:
    straight = pretrain(cfg_for(tiles, tmp_path / "a", max_steps=5))
    cfg_b = cfg_for(tiles, tmp_path / "b", max_steps=5, checkpoint_every=2)
    pretrain(cfg_b, stop_at_step=4)  # "killed" after step 4 (mid-epoch 2)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    resumed = pretrain(replace(cfg_b, resume=True))
    la = json.loads((straight / "history.json").read_text())["loss"]
    lb = json.loads((resumed / "history.json").read_text())["loss"]
    assert len(lb) == 5 and np.allclose(la, lb, rtol=1e-5, atol=1e-6)
    wa, wb = load_encoder(straight).model.state_dict(), load_encoder(resumed).model.state_dict()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


def test_cli_pretrain_and_errors(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["pathology", "pretrain", str(tiles), "-o", str(out), "--backbone", "resnet18", "--image-size", "32",
            "--batch-size", "8", "--queue-size", "16", "--max-steps", "2", "--workers", "0", "--device", "cpu"]
    assert main(args) == 0
    assert (out / "model.safetensors").is_file() and (out / "pretrain_config.yaml").is_file()
    assert main(args) == 2  # a finished run is not overwritten silently
    assert "--resume" in capsys.readouterr().err
    assert main(["pathology", "pretrain", str(tmp_path / "nope"), "-o", str(tmp_path / "x"), "--max-steps", "1"]) == 2
    assert "not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pathology", "pretrain", str(empty), "-o", str(tmp_path / "y"), "--max-steps", "1"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["pathology", "pretrain", str(tiles), "-o", str(tmp_path / "z"), "--backbone", "nonet9",
                 "--batch-size", "8", "--queue-size", "16", "--max-steps", "1", "--device", "cpu"]) == 2
    assert "unknown architecture" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs where one is present)")
def test_one_gpu_run_and_resume(tiles: Path, tmp_path: Path) -> None:
    """One GPU: bf16 autocast, channels_last, a checkpoint resumed onto the GPU (RNG states stay on the CPU)."""
    straight = pretrain(cfg_for(tiles, tmp_path / "a", device="cuda", max_steps=4))
    cfg_b = cfg_for(tiles, tmp_path / "b", device="cuda", max_steps=4, checkpoint_every=2)
    pretrain(cfg_b, stop_at_step=2)
    resumed = pretrain(replace(cfg_b, resume=True))
    la = json.loads((straight / "history.json").read_text())["loss"]
    lb = json.loads((resumed / "history.json").read_text())["loss"]
    assert len(lb) == 4 and np.all(np.isfinite(lb))
    assert np.allclose(la, lb, rtol=2e-2, atol=2e-2)  # cuDNN kernels may differ in the last bits
    enc = load_encoder(resumed, device="cuda")
    with torch.no_grad():
        assert enc.model(torch.zeros(2, 3, 32, 32, device="cuda")).shape == (2, 512)
