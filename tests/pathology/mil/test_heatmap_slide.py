"""`domainfm pathology heatmap` on a real slide: tiling + extraction with the recorded encoder + heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from domainfm.cli import main
from domainfm.pathology.mil.heatmap import score_map
from domainfm.pathology.mil.models import build_mil_model
from domainfm.pathology.mil.store import save_mil_model


def _model_for_random_resnet18(d: Path) -> Path:
    torch.manual_seed(0)
    model = build_mil_model("chowder", 512, n_extreme=2)
    enc_cfg = {"source": "random-init", "arch": "resnet18", "image_size": 32, "name": "resnet18-random"}
    prov = {"encoder": "resnet18-random", "encoder_config": json.dumps(enc_cfg), "tile_size": 32,
            "target_mpp": 4.0}
    return save_mil_model(model, d, "chowder", {"provenance": prov, "in_dim": 512})


def test_heatmap_from_raw_slide(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slide = data_dir / "pathology" / "slides" / "CMU-1-Small-Region.svs"
    model = _model_for_random_resnet18(tmp_path / "model")
    rc = main(["pathology", "heatmap", "--model", str(model), "--slide", str(slide), "-o", str(tmp_path / "out"),
               "--top-k", "3", "--batch-size", "32"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "CMU-1-Small-Region: P(positive)" in out.out
    res = json.loads((tmp_path / "out" / "CMU-1-Small-Region_heatmap.json").read_text())
    assert res["n_tiles"] > 5 and res["target_mpp"] == 4.0
    for k in ("heatmap", "geojson", "gallery"):
        assert Path(res[k]).is_file()
    # the features were made by the recorded encoder at the recorded resolution
    with h5py.File(tmp_path / "out" / "features" / "CMU-1-Small-Region.h5") as f:
        assert f["features"].shape == (res["n_tiles"], 512)
        assert f.attrs["encoder"] == "resnet18-random" and float(f.attrs["target_mpp"]) == 4.0
        coords = f["coords"][()]
    # geometry: the overlay differs from the thumbnail exactly on the tiles' thumbnail boxes
    from PIL import Image

    thumb = Image.open(res["thumbnail"])
    covered = ~np.isnan(score_map(coords, np.ones(len(coords)), res["level0_tile_size"],
                                  res["thumb_downsample"], thumb.size))
    over = np.asarray(Image.open(Path(res["heatmap"]).with_name("CMU-1-Small-Region_heatmap_overlay.png")))
    changed = (over.astype(int) != np.asarray(thumb.convert("RGB")).astype(int)).any(-1)
    assert not changed[~covered].any()
    assert changed[covered].mean() > 0.9
    geo = json.loads(Path(res["geojson"]).read_text())
    assert len(geo["features"]) == res["n_tiles"]
    x, y = coords[0]
    t = res["level0_tile_size"]
    assert geo["features"][0]["geometry"]["coordinates"][0][2] == [x + t, y + t]
