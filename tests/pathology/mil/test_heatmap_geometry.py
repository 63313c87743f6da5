"""Tile scores land on the right thumbnail pixels; GeoJSON squares; gallery ordering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainfm.pathology.mil.heatmap import (
    gallery,
    normalise,
    overlay,
    save_geojson,
    save_heatmap,
    score_map,
    tile_box,
    top_bottom,
)


def test_scores_land_on_the_tile_pixels() -> None:
    # level-0 tiles of 256 px, thumbnail downsample 32 -> 8 px squares
    coords = np.array([[0, 0], [256, 0], [512, 768], [1024, 256]])
    scores = np.array([0.1, 0.5, 0.9, 0.3])
    m = score_map(coords, scores, 256, 32.0, (48, 40))
    assert m.shape == (40, 48)
    assert np.all(m[0:8, 0:8] == 0.1) and np.all(m[0:8, 8:16] == 0.5)
    assert np.all(m[24:32, 16:24] == 0.9) and np.all(m[8:16, 32:40] == 0.3)
    assert np.isnan(m).sum() == 40 * 48 - 4 * 64  # nothing else covered


def test_non_integer_downsample_and_overlap_mean() -> None:
    x0, y0, x1, y1 = tile_box(100, 50, 224, 10.5, 1000, 1000)
    assert (x0, y0, x1, y1) == (10, 5, 31, 26)
    # two half-overlapping tiles (stride < tile): the shared pixels get the mean
    m = score_map(np.array([[0, 0], [16, 0]]), np.array([1.0, 3.0]), 32, 1.0, (48, 32))
    assert m[0, 8] == 1.0 and m[0, 20] == 2.0 and m[0, 40] == 3.0
    # tiles at the border are clipped, not wrapped
    m = score_map(np.array([[40, 0]]), np.array([1.0]), 32, 1.0, (48, 32))
    assert np.nansum(m) == 8 * 32


def test_overlay_changes_only_covered_pixels() -> None:
    thumb = Image.new("RGB", (20, 10), (200, 200, 200))
    m = score_map(np.array([[0, 0]]), np.array([1.0]), 5, 1.0, thumb.size)
    out = np.asarray(overlay(thumb, m))
    assert (out[5:, :] == 200).all() and (out[:5, 5:] == 200).all()
    assert not (out[:5, :5] == 200).all()


def test_normalise() -> None:
    assert normalise(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert normalise(np.array([2.0, 4.0]), "minmax").tolist() == [0.0, 1.0]


def test_geojson_squares_in_level0(tmp_path: Path) -> None:
    p = save_geojson(np.array([[10, 20], [30, 40]]), np.array([0.2, 0.8]), 16, tmp_path / "t.geojson")
    g = json.loads(p.read_text())
    assert g["type"] == "FeatureCollection" and len(g["features"]) == 2
    f = g["features"][1]
    assert f["geometry"]["coordinates"][0] == [[30, 40], [46, 40], [46, 56], [30, 56], [30, 40]]
    assert f["properties"]["measurements"]["tile score"] == pytest.approx(0.8)
    assert f["properties"]["objectType"] == "detection"


def test_heatmap_png_and_gallery(tmp_path: Path) -> None:
    thumb = Image.new("RGB", (64, 32), "white")
    coords = np.array([[x, y] for y in range(0, 128, 32) for x in range(0, 256, 32)])
    scores = np.linspace(0, 1, len(coords))
    out = save_heatmap(thumb, coords, scores, 32, 4.0, tmp_path / "h.png")
    assert Image.open(out).size[0] > 0 and (tmp_path / "h_overlay.png").is_file()
    over = np.asarray(Image.open(tmp_path / "h_overlay.png"))
    assert over.shape == (32, 64, 3)
    top, bottom = top_bottom(scores, 3)
    assert top.tolist() == [31, 30, 29] and bottom.tolist() == [0, 1, 2]
    tiles = [Image.new("RGB", (10, 10), (int(255 * s), 0, 0)) for s in scores]
    g = gallery([tiles[i] for i in top], list(scores[top]), [tiles[i] for i in bottom], list(scores[bottom]),
                tmp_path / "g.png", cell=16)
    assert Image.open(g).size[1] > 32
