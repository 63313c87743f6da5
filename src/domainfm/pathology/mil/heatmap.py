"""Per-tile scores drawn on a slide: heatmap over the thumbnail (PNG), GeoJSON for QuPath, tile gallery.

Colour scales (`--scale`):
* ``calibrated`` (default): one fixed 0..1 scale shared by every slide, tied to the model's calibrated
  output: each tile gets the slide's P(positive) times its share of the slide's evidence (its raw
  score relative to the slide's strongest tile: attention / max attention, or min-max of logit-kind
  scores), `calibrated_tile_scores`. The hottest tile of a slide is drawn at the slide's probability,
  so a slide the model calls negative stays cool everywhere: a heatmap never looks hot just because
  some tile is the hottest of its own slide. (A tile's P(positive) "alone", i.e. the model run on a
  one-tile bag, was tried and rejected: such bags lie outside what ABMIL's or DSMIL's bag stream was
  trained on, and tiles of negative slides came out at 0.98.)
* ``rank``: per-slide percentile of the model's raw tile scores (as CLAM draws attention): shows
  where, within one slide, the model looks; every slide then spans the whole scale.
* ``minmax``: per-slide min-max of the raw tile scores.

Geometry: tile i covers level-0 pixels [x, x + T) x [y, y + T) (T = level-0 tile size, (x, y) its
top-left coordinate). On a thumbnail whose pixel spans `downsample` level-0 pixels, it covers
[round(x / ds), round((x + T) / ds)) on each axis (at least one pixel), so adjacent tiles never
overlap; where tiles do overlap (a tiling with stride < T), the map takes their mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.io import atomic_path, atomic_write_text


def tile_box(x: float, y: float, tile: float, downsample: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) thumbnail pixel box of a level-0 tile, clipped to the thumbnail."""
    x0, y0 = int(round(x / downsample)), int(round(y / downsample))
    x1 = max(x0 + 1, int(round((x + tile) / downsample)))
    y1 = max(y0 + 1, int(round((y + tile) / downsample)))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def score_map(coords: np.ndarray, scores: np.ndarray, tile_size: float, downsample: float,
              size: tuple[int, int]) -> np.ndarray:
    """(H, W) float map at thumbnail resolution (size = (W, H)); NaN where no tile lies."""
    w, h = size
    acc = np.zeros((h, w), dtype=np.float64)
    cnt = np.zeros((h, w), dtype=np.int32)
    for (x, y), s in zip(np.asarray(coords), np.asarray(scores, dtype=np.float64), strict=True):
        x0, y0, x1, y1 = tile_box(float(x), float(y), tile_size, downsample, w, h)
        if x1 > x0 and y1 > y0:
            acc[y0:y1, x0:x1] += s
            cnt[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)


SCALES = ("calibrated", "rank", "minmax")


def calibrated_tile_scores(tile_scores: np.ndarray, slide_prob: float, kind: str = "logit") -> np.ndarray:
    """(N,) values in [0, 1]: slide P(positive) x the tile's relative evidence (see the module docstring).

    kind "attention": a_i / max_j a_j (negative values of an approximate attention row count as 0);
    kind "logit": (s_i - min s) / (max s - min s), all tiles equal (1) when the scores are all equal."""
    s = np.asarray(tile_scores, dtype=np.float64)
    if len(s) == 0:
        return s
    if kind == "attention":
        a = np.clip(s, 0.0, None)
        rel = a / a.max() if a.max() > 0 else np.ones_like(a)
    else:
        lo, hi = float(s.min()), float(s.max())
        rel = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    return float(slide_prob) * rel


def normalise(scores: np.ndarray, how: str = "rank") -> np.ndarray:
    """Scores -> [0, 1]: "calibrated" (already probabilities: clipped, never rescaled per slide), "rank"
    (per-slide percentile, as CLAM draws attention) or "minmax" (per slide)."""
    if how not in SCALES:
        raise ValueError(f"unknown heatmap scale {how!r}; choose {', '.join(SCALES)}")
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    if how == "calibrated":  # calibrated_tile_scores values, drawn as they are: never rescaled per slide
        if s.min() < 0.0 or s.max() > 1.0:
            raise ValueError("the calibrated scale draws probabilities in [0, 1] (see calibrated_tile_scores); "
                             "raw tile scores need scale 'rank' or 'minmax'")
        return s
    if how == "rank":
        order = np.argsort(np.argsort(s, kind="stable"), kind="stable")
        return order / max(1, len(s) - 1)
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.full_like(s, 0.5)


def overlay(thumbnail: Any, smap: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> Any:
    """Blend a colour-mapped [0, 1] score map onto the thumbnail (PIL RGB); uncovered pixels stay as they are."""
    import matplotlib
    from PIL import Image

    base = np.asarray(thumbnail.convert("RGB"), dtype=np.float64)
    if base.shape[:2] != smap.shape:
        raise ValueError(f"thumbnail {base.shape[:2]} and score map {smap.shape} differ in size")
    covered = ~np.isnan(smap)
    rgb = matplotlib.colormaps[cmap](np.nan_to_num(smap))[..., :3] * 255.0
    out = base.copy()
    out[covered] = (1 - alpha) * base[covered] + alpha * rgb[covered]
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def save_heatmap(thumbnail: Any, coords: np.ndarray, scores: np.ndarray, tile_size: float, downsample: float,
                 path: str | Path, normalise_how: str = "rank", title: str = "") -> Path:
    """Heatmap PNG: thumbnail | overlay side by side with a colour bar (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    smap = score_map(coords, normalise(scores, normalise_how), tile_size, downsample, thumbnail.size)
    over = overlay(thumbnail, smap)
    w, h = thumbnail.size
    fig, axes = plt.subplots(1, 2, figsize=(10, 5 * h / max(w, 1) + 0.6), dpi=110)
    axes[0].imshow(thumbnail)
    axes[0].set_title("slide")
    im = axes[1].imshow(over)
    axes[1].set_title(title or f"tile scores ({normalise_how})")
    for ax in axes:
        ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap="jet", norm=matplotlib.colors.Normalize(0, 1))
    label = {"rank": "score percentile (per slide)", "minmax": "score (per-slide min-max)",
             "calibrated": "P(positive), one scale for all slides"}[normalise_how]
    fig.colorbar(sm, ax=axes[1], fraction=0.04, label=label)
    del im
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    over.save(Path(path).with_name(Path(path).stem + "_overlay.png"))
    return Path(path)


def tiles_geojson(coords: np.ndarray, scores: np.ndarray, tile_size: float, name: str = "tile score",
                  kind: str = "logit", extra: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """A FeatureCollection of tile squares in level-0 pixels; QuPath imports them as detections whose
    `measurements` can be coloured with Measure > Show measurement maps (`extra`: more measurements)."""
    feats = []
    ranks = normalise(scores, "rank")
    extra = extra or {}
    for i, ((x, y), s) in enumerate(zip(np.asarray(coords), np.asarray(scores, dtype=float), strict=True)):
        x, y, t = float(x), float(y), float(tile_size)
        ring = [[x, y], [x + t, y], [x + t, y + t], [x, y + t], [x, y]]
        feats.append({"type": "Feature", "id": f"tile-{i}",
                      "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"objectType": "detection", "name": f"tile {i}",
                                     "measurements": {name: float(s), "percentile": float(ranks[i]),
                                                      **{k: float(v[i]) for k, v in extra.items()}},
                                     "score_kind": kind}})
    return {"type": "FeatureCollection", "features": feats}


def save_geojson(coords: np.ndarray, scores: np.ndarray, tile_size: float, path: str | Path, **kw: Any) -> Path:
    atomic_write_text(path, json.dumps(tiles_geojson(coords, scores, tile_size, **kw)))
    return Path(path)


def top_bottom(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k highest (descending) and k lowest (ascending) scores."""
    order = np.argsort(np.asarray(scores), kind="stable")
    k = min(k, len(order))
    return order[::-1][:k], order[:k]


def gallery(top: list[Any], top_scores: list[float], bottom: list[Any], bottom_scores: list[float],
            path: str | Path, cell: int = 128) -> Path:
    """Two rows of tiles (top-k highest scores, bottom-k lowest) with their scores, as one PNG."""
    from PIL import Image, ImageDraw

    k = max(len(top), len(bottom), 1)
    pad, label_h = 4, 14
    img = Image.new("RGB", (k * (cell + pad) + pad + 60, 2 * (cell + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(img)
    for row, (tiles, scores, name) in enumerate([(top, top_scores, "top"), (bottom, bottom_scores, "bottom")]):
        y = pad + row * (cell + label_h + pad)
        draw.text((pad, y + cell // 2), name, fill="black")
        for j, (t, s) in enumerate(zip(tiles, scores, strict=True)):
            x = 60 + pad + j * (cell + pad)
            img.paste(t.convert("RGB").resize((cell, cell)), (x, y))
            draw.text((x + 2, y + cell + 1), f"{s:.3g}", fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
