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
