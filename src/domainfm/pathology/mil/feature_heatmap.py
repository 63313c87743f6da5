"""`domainfm pathology heatmap --features DIR`: a heatmap from features someone already extracted.

For users who arrive with CLAM (``h5_files/``), TRIDENT (``features_<encoder>/``) or our own feature
folders: the slide's ``<slide_id>.h5`` is found in DIR (`features.interop`), the MIL model scores
its tiles, and the scores are drawn on the slide's thumbnail at the file's own coordinates. The tile's
level-0 width comes from the file's attributes (TRIDENT ``patch_size_level0``, CLAM/ours
``patch_size`` x ``downsample``); CLAM's ``h5_files`` carry no attributes, so there it is the grid
step of the coordinates (CLAM's default ``step_size`` = ``patch_size``), which is stated in the output.
Outputs in OUT: ``<id>_heatmap.png`` (+ ``_overlay.png``), ``<id>_tiles.geojson``, ``<id>_scores.csv``,
``<id>_heatmap.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json

THUMB_MAX_SIDE = 2048


def grid_step(coords: np.ndarray) -> float | None:
    """Smallest positive spacing of the x (or y) coordinates: the tile pitch of a regular grid."""
    steps = []
    for axis in (0, 1):
        u = np.unique(np.asarray(coords)[:, axis])
        d = np.diff(u)
        d = d[d > 0]
        if len(d):
            steps.append(float(d.min()))
    return min(steps) if steps else None


def feature_heatmap(model_dir: str | Path, slide: str | Path, features_dir: str | Path, out_dir: str | Path, *,
                    device: str = "cpu", scale: str = "calibrated") -> dict[str, Any]:
    from domainfm.pathology.features.interop import find_feature_file, read_feature_file
    from domainfm.pathology.mil.heatmap import SCALES, calibrated_tile_scores, save_geojson, save_heatmap
    from domainfm.pathology.mil.report import write_predictions
    from domainfm.pathology.mil.store import load_mil_model
    from domainfm.pathology.mil.train import predict
    from domainfm.pathology.slides import open_slide, slide_id_of
    from domainfm.pathology.slides.regions import read_overview

    if scale not in SCALES:
        raise UserError(f"--scale {scale!r}: choose {', '.join(SCALES)}")
    slide, out = Path(slide), Path(out_dir)
    sid = slide_id_of(slide)
    path = find_feature_file(features_dir, sid)
    if path is None:
        raise UserError(f"no feature file for slide {sid!r} in {features_dir}")
    sf = read_feature_file(path)
    if sf.coords is None:
        raise UserError(f"{path}: no coordinates (a CLAM .pt file); use the h5_files/ folder")
    model, meta = load_mil_model(model_dir, device)
    if sf.features.shape[1] != meta["in_dim"]:
        raise UserError(f"{path}: {sf.features.shape[1]}-d features, the model expects {meta['in_dim']}")
    tile0 = sf.attrs.get("level0_tile_size")
    tile_source = "file attributes"
    if tile0 is None:
        tile0, tile_source = grid_step(sf.coords), "grid step of the coordinates"
    if not tile0:
        raise UserError(f"{path}: cannot tell the tile size (no patch attributes, a single tile)")
    probs, tile_scores = predict(model, [sf.features], device=device)
    scores = tile_scores[0]
    with open_slide(slide) as s:
        W, H = s.dimensions
        ds = max(max(W, H) / THUMB_MAX_SIDE, 1.0)
        thumb = read_overview(s, ds)
    thumb_ds = W / thumb.width
    out.mkdir(parents=True, exist_ok=True)
    kind = meta.get("tile_score_kind", "logit")
    p_tile = calibrated_tile_scores(scores, float(probs[0]), kind)  # one 0..1 scale for all slides (heatmap.py)
    heat = save_heatmap(thumb, sf.coords, p_tile if scale == "calibrated" else scores, float(tile0), thumb_ds,
                        out / f"{sid}_heatmap.png", normalise_how=scale,
                        title=f"{meta['model']} {kind} ({scale}), slide P(pos)={probs[0]:.2f}")
    geo = save_geojson(sf.coords, scores, float(tile0), out / f"{sid}_tiles.geojson", kind=kind,
                       extra={"p_tile": p_tile})
    write_predictions(out / f"{sid}_scores.csv", [{"x": int(c[0]), "y": int(c[1]), "score": float(v)}
                                                   for c, v in zip(sf.coords, scores, strict=True)])
    res = {"slide_id": sid, "score": float(probs[0]), "n_tiles": int(len(scores)), "features": str(path),
           "level0_tile_size": float(tile0), "tile_size_from": tile_source, "heatmap": str(heat),
           "geojson": str(geo), "scores": str(out / f"{sid}_scores.csv"), "thumb_downsample": thumb_ds}
    atomic_write_json(out / f"{sid}_heatmap.json", res)
    return res
