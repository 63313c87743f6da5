"""Tissue detection uses scikit-image (Otsu, small objects, small holes) and shapely (valid polygons):
the results equal those libraries' own functions on the real slide's overview."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from domainfm.pathology.slides import open_slide, tissue
from domainfm.pathology.slides.regions import read_overview

CMU = Path(os.environ.get("DOMAINFM_DATA", "/nonexistent")) / "pathology" / "slides" / "CMU-1-Small-Region.svs"


@pytest.mark.skipif(not CMU.is_file(), reason="needs $DOMAINFM_DATA/pathology/slides")
def test_otsu_and_morphology_are_scikit_image() -> None:
    with open_slide(CMU) as s:
        sat = tissue.saturation(np.asarray(read_overview(s, 8.0)))
    assert tissue.otsu(sat) == pytest.approx(threshold_otsu(sat.astype(np.float64), nbins=256), abs=1e-12)
    with open_slide(CMU) as s:
        s8 = tissue.saturation_u8(np.asarray(read_overview(s, 8.0)))  # what tissue_mask thresholds
    assert np.abs(s8.astype(int) - np.round(sat * 255).astype(int)).max() <= 1
    assert tissue.otsu_u8(s8) * 255 == pytest.approx(threshold_otsu(s8), abs=1e-9)
    mask = sat > tissue.otsu(sat)
    assert np.array_equal(tissue.remove_small_objects(mask, 50), remove_small_objects(mask, max_size=50))
    inner = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), bool)  # no background touching the border
    inner[1:-1, 1:-1] = mask
    inner[[0, -1], :] = inner[:, [0, -1]] = True
    assert np.array_equal(tissue.fill_small_holes(inner, 40), remove_small_holes(inner, max_size=40))


def test_border_background_is_not_a_hole() -> None:
    m = np.ones((20, 20), bool)
    m[0:3, 8:11] = False  # a notch of glass at the border: 9 px
    m[9:11, 9:11] = False  # a real hole: 4 px
    out = tissue.fill_small_holes(m, 20)
    assert out[10, 10] and not out[0, 9]


def test_self_crossing_rings_become_valid_polygons() -> None:
    bowtie = [[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0], [0.0, 0.0]]
    assert not Polygon(bowtie).is_valid
    polys = tissue._valid_rings([bowtie])
    assert len(polys) == 2
    assert all(Polygon(p[0], p[1:]).is_valid for p in polys)
    assert sum(Polygon(p[0]).area for p in polys) == pytest.approx(50.0)
    assert all(shapely.LinearRing(p[0]).is_ccw for p in polys)  # GeoJSON exteriors counter-clockwise


def test_small_objects_and_holes_equal_scikit_image_on_random_masks() -> None:
    """OpenCV labels the objects that scikit-image removes (`tissue._label4`): the result is still exactly
    skimage's, for any density, size limit and shape (one object only included: skimage warns there)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 60, 2)
        m = rng.random((h, w)) < rng.random()
        k = int(rng.integers(0, 30))
        assert np.array_equal(tissue.remove_small_objects(m, k), remove_small_objects(m, max_size=k))
        framed = np.pad(m, 1, constant_values=True)  # no background touches the border: plain hole filling
        assert np.array_equal(tissue.fill_small_holes(framed, k), remove_small_holes(framed, max_size=k))
    one = np.zeros((9, 9), bool)
    one[2:4, 2:4] = True
    assert not tissue.remove_small_objects(one, 4).any() and tissue.remove_small_objects(one, 3).sum() == 4


def test_otsu_u8_equals_scikit_image_on_random_values() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        v = rng.integers(0, int(rng.integers(2, 257)), tuple(rng.integers(2, 200, 2))).astype(np.uint8)
        assert tissue.otsu_u8(v) * 255 == pytest.approx(threshold_otsu(v), abs=1e-9)
