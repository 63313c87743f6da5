"""Tiling benchmark: domainfm vs a straightforward CLAM-style per-tile loop, on the real slides.

Baseline (what most tiling scripts do): walk the full level-0 grid, `openslide.read_region` every tile
at level 0 (size = the tile's level-0 extent), convert to HSV and keep it when the fraction of saturated
pixels is >= min_tissue; for tile images, resize kept tiles to `tile_size` and save them (same format
and quality as ours).

Ours: `tile_slide` -- tissue mask from the overview (scanner thumbnail or a low level), exact tile
tissue fractions from the mask's integral image, and (tile images) reads at the chosen level in row
runs. Timed two ways for coordinates: `plan` (open + mask + coordinates) and `tile_slide` end to end
(also writing the coords .h5, thumbnail, mask, overlay, grid PNGs and GeoJSON).

    DOMAINFM_DATA=/path/to/shared/data .venv/bin/python benchmarks/bench_tiling.py --repeats 5

Prints medians of the repeats (seconds), tiles/s and the speed-up ratios (baseline / ours).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from domainfm.pathology.slides import TileConfig, open_slide, tile_slide
from domainfm.pathology.slides.tiling import plan_tiles

SAT_THRESHOLD = 20  # of 255: a pixel is "tissue" in the baseline's per-tile check


def baseline(path: Path, mpp: float, cfg: TileConfig, save_dir: Path | None) -> int:
    """CLAM-style: every grid tile read at level 0, per-tile tissue check, optional save."""
    import openslide

    osr = openslide.OpenSlide(str(path))
    W, H = osr.dimensions
    ts0 = int(round(cfg.tile_size * cfg.target_mpp / mpp))
    kept = 0
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for y in range(0, H - ts0 + 1, ts0):
        for x in range(0, W - ts0 + 1, ts0):
            tile = osr.read_region((x, y), 0, (ts0, ts0)).convert("RGB")
            sat = np.asarray(tile.convert("HSV"))[..., 1]
            if (sat > SAT_THRESHOLD).mean() < cfg.min_tissue:
                continue
            kept += 1
            if save_dir is not None:
                if ts0 != cfg.tile_size:
                    tile = tile.resize((cfg.tile_size, cfg.tile_size), Image.Resampling.BILINEAR)
                tile.save(save_dir / f"{x}_{y}.jpg", quality=cfg.jpeg_quality)
    osr.close()
    return kept


def ours_plan(path: Path, mpp: float | None, cfg: TileConfig) -> int:
    with open_slide(path) as s:
        return len(plan_tiles(s, cfg, mpp).coords)


def interleaved(methods: dict[str, Callable[[], int]], repeats: int, setup: Callable[[], None],
                tag: str) -> dict[str, tuple[float, int]]:
    """One untimed warm-up call per method, then `repeats` rounds calling every method in turn (so
    load changes on a shared machine hit all methods alike); returns {name: (median s, result)}."""
    for fn in methods.values():
        setup()
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    res: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            setup()
            t0 = time.perf_counter()
            res[name] = fn()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"  {tag:<12} {name:<16} runs {' '.join(f'{t:.3f}' for t in ts)}  median {statistics.median(ts):.3f}s",
              flush=True)
    return {k: (statistics.median(v), res[k]) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("DOMAINFM_DATA"), help="shared data dir (DOMAINFM_DATA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tcga-mpp", type=float, default=0.25,
                    help="ASSUMED µm/px of the TCGA slide (it has no resolution metadata)")
    ap.add_argument("--only", choices=["cmu", "tcga"], help="benchmark one slide only")
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("set DOMAINFM_DATA or pass --data")
    sdir = Path(args.data) / "pathology" / "slides"
    slides = [(sdir / "CMU-1-Small-Region.svs", None), (sdir / "TCGA-CR-7395-01A-01-TS1.svs", args.tcga_mpp)]
    if args.only:
        slides = [sl for sl in slides if sl[0].name.lower().startswith(args.only)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_tiling_"))
    cfg = TileConfig(target_mpp=0.5, tile_size=224, min_tissue=0.5, jpeg_quality=90, tile_format="jpg")
    rows = []
    totals = {k: 0.0 for k in ("b_coords", "o_plan", "o_full", "b_tiles", "o_tiles")}
    out, bdir = tmp / "ours", tmp / "base"
    cfg_t = TileConfig(**{**cfg.__dict__, "save_tiles": True})

    def clean() -> None:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)

    print(f"tiling benchmark: target 0.5 µm/px, 224 px, min tissue 0.5, median of {args.repeats} repeats",
          flush=True)
    for path, assumed in slides:
        with open_slide(path) as s:
            mpp = assumed or s.mpp
            ngrid_base = ((s.dimensions[0] - round(224 * 0.5 / mpp)) // round(224 * 0.5 / mpp) + 1) * (
                (s.dimensions[1] - round(224 * 0.5 / mpp)) // round(224 * 0.5 / mpp) + 1)
        m = interleaved({
            "baseline coords": lambda p=path, m=mpp: baseline(p, m, cfg, None),
            "ours plan": lambda p=path, a=assumed: ours_plan(p, a, cfg),
            "ours tile_slide": lambda p=path, a=assumed: tile_slide(p, out, cfg, mpp=a)["n_tiles"],
            "baseline tiles": lambda p=path, m=mpp: baseline(p, m, cfg, bdir),
            "ours tiles": lambda p=path, a=assumed: tile_slide(p, out, cfg_t, mpp=a)["n_tiles"],
        }, args.repeats, clean, path.name[:12])
        (tb, nb), (tp, npn), (tf, _), (tbt, nbt), (tot, not_) = m.values()
        clean()
        for k, v in zip(totals, (tb, tp, tf, tbt, tot), strict=True):
            totals[k] += v
        rows.append((path.name, mpp, ngrid_base, nb, npn, tb, tp, tf, tbt, tot, nbt, not_))
    shutil.rmtree(tmp, ignore_errors=True)
    for (name, mpp, ngrid, nb, npn, tb, tp, tf, tbt, tot, nbt, not_) in rows:
        print(f"\n{name}  (slide {mpp} µm/px{' ASSUMED' if 'TCGA' in name else ''}; grid {ngrid} tiles)")
        print(f"  slide -> coordinates   baseline {tb:7.3f}s ({ngrid / tb:8.0f} grid tiles/s, kept {nb})")
        print(f"                         ours plan {tp:6.3f}s ({ngrid / tp:8.0f} grid tiles/s, kept {npn})"
              f"  x{tb / tp:.1f}")
        print(f"                         ours full {tf:6.3f}s (+h5, thumbnail, mask, overlay, grid, GeoJSON)"
              f"  x{tb / tf:.1f}")
        print(f"  slide -> tile images   baseline {tbt:7.3f}s ({nbt / tbt:6.0f} tiles/s, {nbt} tiles)")
        print(f"                         ours     {tot:7.3f}s ({not_ / tot:6.0f} tiles/s, {not_} tiles)"
              f"  x{tbt / tot:.2f}")
    t = totals
    print(f"\nall slides: coordinates x{t['b_coords'] / t['o_plan']:.1f} (plan), "
          f"x{t['b_coords'] / t['o_full']:.1f} (end to end); tile images x{t['b_tiles'] / t['o_tiles']:.2f}")


if __name__ == "__main__":
    main()
