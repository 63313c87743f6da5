"""Heatmaps show calibrated scores by default (slide P(positive) x each tile's relative evidence, one
0..1 scale for all slides): a negative slide stays cool, a positive one lights up where its witness
tiles are; per-slide rank scaling (the old default) makes both look as hot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mil_helpers import write_cohort
from PIL import Image

from domainfm.pathology.mil.bags import grid_coords
from domainfm.pathology.mil.data import load_cohort
from domainfm.pathology.mil.heatmap import (
    calibrated_tile_scores,
    normalise,
    save_heatmap,
    score_map,
)
from domainfm.pathology.mil.train import TrainConfig, fit, predict


def _heat(png: Path) -> np.ndarray:
    """Per-pixel 'heat' of a jet overlay on a white thumbnail: red minus blue (jet: blue = 0, red = 1)."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    return rgb[..., 0] - rgb[..., 2]


@pytest.mark.parametrize("name", ["abmil", "dsmil"])  # attention-kind and logit-kind tile scores
def test_negative_slide_is_cooler_than_positive(tmp_path: Path, name: str) -> None:
    feats, labels = write_cohort(tmp_path, n_slides=40, seed=1)
    co = load_cohort(feats, labels)
    model = fit(co.features, co.labels, TrainConfig(model=name, epochs=30, batch_size=8, hidden=16, lr=5e-3, seed=0))
    p, raw = predict(model, co.features)
    neg = next(i for i in range(len(co)) if co.labels[i] == 0 and p[i] < 0.5)
    pos = next(i for i in range(len(co)) if co.labels[i] == 1 and p[i] > 0.5)
    heats = {}
    for scale in ("calibrated", "rank"):
        for i in (neg, pos):
            x = co.features[i]
            scores = calibrated_tile_scores(raw[i], p[i], model.tile_score_kind) if scale == "calibrated" else raw[i]
            thumb = Image.new("RGB", (48, 48), "white")
            png = save_heatmap(thumb, grid_coords(len(x), 8), scores, 8, 1.0, tmp_path / f"{scale}_{i}.png",
                               normalise_how=scale)
            covered = ~np.isnan(score_map(grid_coords(len(x), 8), np.ones(len(x)), 8, 1.0, thumb.size))
            heats[scale, i] = _heat(png.with_name(png.stem + "_overlay.png"))[covered]
    # calibrated (the default of `domainfm pathology heatmap`): the negative slide is cooler, with no hot
    # pixel at all (above the middle of the colour scale: jet turns red-dominant past 0.5)
    assert heats["calibrated", neg].max() < heats["calibrated", pos].max()
    assert (heats["calibrated", neg] > 0).sum() == 0 < (heats["calibrated", pos] > 0).sum()
    cal = {i: calibrated_tile_scores(raw[i], p[i], model.tile_score_kind) for i in (neg, pos)}
    assert cal[neg].max() < 0.5 < cal[pos].max()
    # per-slide rank scaling: the negative slide's hottest tile is drawn as hot as the positive's
    assert heats["rank", neg].max() == pytest.approx(heats["rank", pos].max(), abs=2)


def test_calibrated_scores_formula() -> None:
    # attention: slide probability x attention relative to the most attended tile
    np.testing.assert_allclose(calibrated_tile_scores(np.array([0.1, 0.6, 0.3]), 0.8, "attention"), [0.8 / 6, 0.8, 0.4])
    # logit-kind scores: min-max within the slide, then the slide probability
    np.testing.assert_allclose(calibrated_tile_scores(np.array([-2.0, 0.0, 2.0]), 0.2, "logit"), [0.0, 0.1, 0.2])
    assert calibrated_tile_scores(np.array([1.0, 1.0]), 0.3).tolist() == [0.3, 0.3]


def test_calibrated_scale_is_probabilities_not_rescaled() -> None:
    p = np.array([0.05, 0.1, 0.2])
    assert normalise(p, "calibrated").tolist() == p.tolist()  # a cool slide stays cool
    assert normalise(p, "rank").tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="probabilities"):
        normalise(np.array([-3.0, 2.0]), "calibrated")
