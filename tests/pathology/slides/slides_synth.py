"""Synthetic pyramidal slides for the slides tests (written with tifffile, one page per level)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TISSUE = (slice(96, 352), slice(160, 416))  # rows, cols of the tissue block at level 0 (512 x 576 slide)


def make_base(h: int = 512, w: int = 576, seed: int = 0) -> np.ndarray:
    """White background with a textured pink 'tissue' block at TISSUE, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 242, np.uint8) + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
    ys, xs = TISSUE
    block = np.array([205, 110, 170], np.int16) + rng.integers(-25, 25, (ys.stop - ys.start, xs.stop - xs.start, 3))
    img[ys, xs] = np.clip(block, 0, 255).astype(np.uint8)
    return img


def write_pyramid(path: Path, base: np.ndarray, n_levels: int = 3, mpp: float | None = 0.25,
                  tile: int = 64) -> list[np.ndarray]:
    """Tiled, uncompressed pyramid TIFF; level k = base[::2**k, ::2**k] (exact, for pixel checks)."""
    import tifffile

    levels = [np.ascontiguousarray(base[:: 2**k, :: 2**k]) for k in range(n_levels)]
    with tifffile.TiffWriter(path) as tw:
        for k, arr in enumerate(levels):
            kw = {}
            if mpp is not None:
                kw = {"resolution": (1e4 / (mpp * 2**k), 1e4 / (mpp * 2**k)), "resolutionunit": "CENTIMETER"}
            tw.write(arr, photometric="rgb", tile=(tile, tile), subfiletype=1 if k else 0, **kw)
    return levels


