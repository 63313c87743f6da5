"""Fast CPU MoCo: the decoded tile cache (reuse, invalidation, dropped files), no decode in the loop,
the wall-clock budget (`--max-minutes`) and its resume, and the augmentation preset in config.json."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainfm.pathology.ssl.config import MocoConfig
from domainfm.pathology.ssl.data import build_tile_cache, find_images
from domainfm.pathology.ssl.train import StepPlanner, pretrain


@pytest.fixture()
def tiles(tmp_path: Path) -> Path:
    root = tmp_path / "tiles"
    rng = np.random.default_rng(0)
    for c, base in ((0, (230, 160, 200)), (1, (110, 60, 160))):
        (root / str(c)).mkdir(parents=True)
        for i in range(8):
            arr = np.clip(np.asarray(base) + rng.normal(0, 25, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / str(c) / f"t{i}.jpg", quality=90)
    return root


def test_cache_reused_invalidated_and_accounts_for_every_file(tiles: Path, tmp_path: Path) -> None:
    files = find_images(tiles)
    c1 = build_tile_cache(files, tmp_path / "cache")
    assert c1.built and len(c1) == 16 and c1.array.shape == (16, 24, 24, 3) and c1.array.dtype == np.uint8
    with Image.open(files[3]) as im:
        assert np.array_equal(c1.array[3], np.asarray(im.convert("RGB")))  # decoded pixels, same order
    c2 = build_tile_cache(files, tmp_path / "cache")
    assert not c2.built and c2.path == c1.path and isinstance(c2.array, np.memmap)
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: a new cache
    assert build_tile_cache(files, tmp_path / "cache").built
    assert build_tile_cache(files, tmp_path / "cache", size=16).array.shape[1:] == (16, 16, 3)
    bad = tiles / "1" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    c3 = build_tile_cache(find_images(tiles), tmp_path / "cache")
    assert len(c3) == 16 and [Path(p).name for p, _ in c3.skipped] == ["broken.jpg"]
    manifest = json.loads(c3.path.with_suffix(".json").read_text())
    assert manifest["n_inputs"] == 17 and manifest["n"] == 16 and len(manifest["skipped"]) == 1
    idx = np.array([5, 0, 9])
    assert np.array_equal(c3.batch(idx).numpy(), c3.array[idx])  # the gather keeps the requested order


def cfg_for(tiles: Path, out: Path, **kw) -> MocoConfig:  # noqa: ANN003
    base = MocoConfig(tiles=str(tiles), output=str(out), backbone="resnet18", image_size=16, batch_size=8,
                      queue_size=16, device="cpu", checkpoint_every=1000, seed=1, threads=1)
    return replace(base, **kw)


def test_training_loop_decodes_nothing_and_records_the_preset(tiles: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    build_tile_cache(find_images(tiles))  # the run's own cache (DOMAINFM_CACHE), decoded beforehand

    def no_decode(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("an image was decoded during training")

    monkeypatch.setattr(Image, "open", no_decode)
    out = pretrain(cfg_for(tiles, tmp_path / "enc", augment="mocov2", max_steps=2))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["augmentation_preset"] == "mocov2" and cfg["augmentation"]["grayscale_p"] == 0.2
    assert cfg["n_train_images"] == 16


def test_planner_fits_steps_to_the_budget() -> None:
    p = StepPlanner(budget_s=10.0)
    total = 10**9
    for step, dt in enumerate([3.0, 0.5, 0.5]):  # the first (slow, warm-up) step is not counted
        total = p.plan(step, 3.0 + 0.5 * max(0, step - 1) if step else 0.0, dt if step else None, total)
    total = p.plan(3, 4.0, 0.5, total)
    assert total == 3 + int(6.0 / 0.5)
    assert p.plan(20, 10.5, 0.5, total) == 20  # out of time: stop now
    assert StepPlanner(10.0, cap=5).plan(3, 1.0, 0.1, 10**9) <= 5


def test_max_minutes_ends_on_budget_with_lr_at_its_end_and_resumes(tiles: Path, tmp_path: Path) -> None:
    budget_min = 0.1  # 6 s
    cfg = cfg_for(tiles, tmp_path / "b", max_minutes=budget_min, checkpoint_every=3)
    pretrain(cfg, stop_at_step=4)  # "killed" after step 4
    out = pretrain(replace(cfg, resume=True))
    meta = json.loads((out / "config.json").read_text())
    hist = json.loads((out / "history.json").read_text())
    steps = meta["steps"]
    assert steps > 6 and len(hist["lr"]) == steps
    # the run used its budget (never much more) and the schedule reached its end with the budget
    assert 0.6 * budget_min * 60 <= meta["train_seconds"] <= budget_min * 60 + 3.0
    base = meta["base_lr"]
    assert hist["lr"][0] == pytest.approx(base, rel=1e-3)
    assert meta["final_lr"] < 0.1 * base
