"""Reading many tiles fast, and the low-resolution overview of a slide.

Tiles are defined on the grid of the level they are read from: tile i covers level pixels
`[xl_i, xl_i + read_size)` (x and y alike) and is resized to `tile_size`. Level-0 coordinates stored in
the coords file are `round(xl * downsample)`, and `round(x0 / downsample)` gives `xl` back exactly.

Adjacent tiles of a row are read with ONE `read_region` call (a "run", at most `max_region` level px
wide) and cut out of it: far fewer calls into the slide library, and each compressed slide tile is
decoded once per run instead of once per tile that touches it. Tiling and `read_tiles` group runs the
same way over the same coordinates, so a re-read returns exactly the pixels tiling saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from domainfm.pathology.slides.readers import Slide

RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow; levels are chosen so the factor is < 2


def level_coords(coords0: np.ndarray, downsample: float) -> np.ndarray:
    """Level-0 (N, 2) -> level pixel coordinates (N, 2) int64 (exact inverse of the tiling rounding)."""
    return np.rint(np.asarray(coords0, np.float64) / downsample).astype(np.int64).reshape(-1, 2)


def runs(lc: np.ndarray, read_size: int, max_region: int = 4096) -> list[tuple[int, int]]:
    """Split tiles (in their given order) into runs [start, stop) read with one region call:
    same row, x increasing with gaps of at most one tile, total width <= max_region level px."""
    out: list[tuple[int, int]] = []
    n = len(lc)
    i = 0
    while i < n:
        j = i + 1
        x0, y0 = lc[i]
        while (j < n and lc[j, 1] == y0 and lc[j, 0] > lc[j - 1, 0]
               and lc[j, 0] - lc[j - 1, 0] <= 2 * read_size and lc[j, 0] + read_size - x0 <= max_region):
            j += 1
        out.append((i, j))
        i = j
    return out


def fit_tile(tile: np.ndarray, tile_size: int) -> np.ndarray:
    """(h, w, 3) -> (tile_size, tile_size, 3), resized with `RESAMPLE` when needed."""
    if tile.shape[0] == tile_size and tile.shape[1] == tile_size:
        return tile
    return np.asarray(Image.fromarray(tile).resize((tile_size, tile_size), RESAMPLE))


_fit = fit_tile


def iter_tile_arrays(slide: Slide, level: int, lc: np.ndarray, read_size: int, tile_size: int,
                     max_region: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, (tile_size, tile_size, 3) uint8) for every tile, in order, reading by runs."""
    ds = slide.level_downsamples[level]
    for a, b in runs(lc, read_size, max_region):
        xs = lc[a:b, 0]
        y = int(lc[a, 1])
        x_start = int(xs[0])
        width = int(xs[-1]) + read_size - x_start
        region = slide.read_region_array((int(round(x_start * ds)), int(round(y * ds))), level,
                                         (width, read_size))
        for k in range(b - a):
            off = int(xs[k]) - x_start
            yield a + k, _fit(region[:, off:off + read_size], tile_size)


def read_overview(slide: Slide, downsample: float, use_associated: bool = True,
                  chunk: int = 4096) -> Image.Image:
    """The whole slide as an RGB image at `downsample` (level-0 px per output px), read from the
    scanner's stored thumbnail when it is fine enough, else from the coarsest sufficient level."""
    W, H = slide.dimensions
    tw, th = max(1, round(W / downsample)), max(1, round(H / downsample))
    if use_associated:
        thumb = slide.associated_thumbnail()
        if (thumb is not None and abs(thumb.width / thumb.height - W / H) <= 0.01 * W / H
                and W / thumb.width <= downsample * 1.0001):
            # reducing_gap: Pillow box-reduces by an integer factor first (same average, several times faster)
            return thumb.resize((tw, th), Image.Resampling.BOX, reducing_gap=3.0) if thumb.size != (tw, th) else thumb
    ok = [lv for lv, d in enumerate(slide.level_downsamples) if d <= downsample * 1.0001]
    level = max(ok, key=lambda lv: slide.level_downsamples[lv]) if ok else 0
    lw, lh = slide.level_dimensions[level]
    d = slide.level_downsamples[level]
    fx, fy = lw / tw, lh / th  # level px per output px
    out = Image.new("RGB", (tw, th), (255, 255, 255))
    step = max(chunk, 1)
    for cy in range(0, lh, step):
        for cx in range(0, lw, step):
            cw, ch = min(step, lw - cx), min(step, lh - cy)
            region = slide.read_region((int(round(cx * d)), int(round(cy * d))), level, (cw, ch))
            ox0, oy0 = round(cx / fx), round(cy / fy)
            ox1, oy1 = round((cx + cw) / fx), round((cy + ch) / fy)
            if ox1 > ox0 and oy1 > oy0:
                out.paste(region.resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BOX, reducing_gap=3.0), (ox0, oy0))
    return out
