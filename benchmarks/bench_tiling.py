"""Tiling benchmark: domainfm vs what CLAM does (contours on a low-resolution mask) and vs a per-tile loop.

CLAM-style planner (`clam_plan`, what CLAM's `create_patches_fp.py` does with its default preset, with
OpenCV as CLAM uses it; no level-0 pixel is read): the low-resolution overview at the resolution of our
mask (4 µm/px; CLAM's own `get_best_level_for_downsample(64)` is level 0 on these one/two-level slides),
read from the same overview source as ours (the scanner thumbnail or a low level), so neither side
decodes level 0 -> HSV -> median blur of the saturation (7) -> fixed threshold (8) -> closing (4x4) ->
`findContours(RETR_CCOMP)` -> contours and holes filtered by area (CLAM's a_t = 100 reference patches
would drop every contour of these small slides, so both sides use our 10,000 µm² / 20,000 µm²; the 8
largest holes) ->
per contour, the grid over its bounding box (step = tile) and CLAM's `isInContourV3_Easy` check (any of
4 points around the tile centre inside the contour, `pointPolygonTest`) and not inside a hole. CLAM
forks a 4-process pool per contour for that check; here it runs in-process (cheaper on these small
slides, so the comparison favours CLAM). `clam own level` is the same code on the image CLAM itself
segments (`create_patches_fp.py`, seg_level -1: level 0 of a one-level slide, else
`get_best_level_for_downsample(64)`, read whole with OpenSlide's `read_region`): level 0 of CMU, level 1
(JPEG 2000) of TCGA.

`--breakdown` times the parts (fastest of 50 calls): what both planners share (OpenSlide open, scanner
thumbnail decode, resize to the mask resolution) and each one's own part, and the best ratio they allow;
and both planners end to end as the fastest of 50 single calls (10 on the mosaic), which a bursty load on
a shared machine disturbs far less than the medians of interleaved repeats.

Per-tile loop (what many tiling scripts do): walk the full level-0 grid, `openslide.read_region` every
tile at level 0 (size = the tile's level-0 extent), convert to HSV and keep it when the fraction of
saturated pixels is >= min_tissue; for tile images, resize kept tiles to `tile_size` and save them (same
format and quality as ours).

Ours: `tile_slide` -- tissue mask from the overview (scanner thumbnail or a low level), exact tile
tissue fractions from the mask's integral image, and (tile images) reads at the chosen level in row
runs. Timed two ways for coordinates: `plan` (open + mask + coordinates) and `tile_slide` end to end
(also writing the coords .h5, thumbnail, mask, overlay, grid PNGs and GeoJSON).

    DOMAINFM_DATA=/path/to/shared/data .venv/bin/python benchmarks/bench_tiling.py --repeats 5

Prints medians (or with `--stat min` minima) of the repeats (seconds), tiles/s and the speed-up ratios
(baseline / ours).
"""

from __future__ import annotations

import argparse
import functools
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
from domainfm.pathology.slides.readers import Slide
from domainfm.pathology.slides.regions import read_overview
from domainfm.pathology.slides.tiling import plan_tiles

SAT_THRESHOLD = 20  # of 255: a pixel is "tissue" in the baseline's per-tile check
# CLAM create_patches_fp.py defaults: seg_params and filter_params
CLAM_SEG = {"sthresh": 8, "sthresh_up": 255, "mthresh": 7, "close": 4}
CLAM_FILTER = {"max_n_holes": 8}
CLAM_REF_PATCH = 512


def _open(path: Path | Callable[[], Slide]) -> Slide:
    return path() if callable(path) else open_slide(path)


def clam_seg_image(path: Path) -> tuple[np.ndarray, tuple[int, int], float | None]:
    """CLAM's own segmentation image (`create_patches_fp.py`, seg_level -1): level 0 of a one-level slide,
    else `get_best_level_for_downsample(64)`, read whole with OpenSlide's `read_region` (RGBA, as CLAM's
    `np.array(self.wsi.read_region((0, 0), seg_level, self.level_dim[seg_level]))`)."""
    import openslide

    with openslide.OpenSlide(str(path)) as osr:
        level = 0 if osr.level_count == 1 else osr.get_best_level_for_downsample(64)
        img = np.array(osr.read_region((0, 0), level, osr.level_dimensions[level]))
        mpp = osr.properties.get("openslide.mpp-x")
        return img, osr.dimensions, float(mpp) if mpp else None


def clam_plan(path: Path | Callable[[], Slide], mpp: float | None, cfg: TileConfig, own_level: bool = False) -> int:
    """CLAM's segmentTissue + process_contours (four_pt check, use_padding=True), see the module docstring.

    `own_level`: segment CLAM's own seg level (`clam_seg_image`) instead of the overview ours uses."""
    import cv2

    if own_level:
        assert isinstance(path, Path)
        img, (W, H), meta_mpp = clam_seg_image(path)
        slide_mpp = mpp or meta_mpp
    else:
        with _open(path) as s:
            slide_mpp = mpp or s.mpp
            W, H = s.dimensions
            # the resolution of our mask (4 µm/px, coarser on huge slides): CLAM's own choice, the best level
            # for downsample 64, is level 0 / level 1 on the real one/two-level slides here (`own_level`)
            ds = max(cfg.mask_mpp / slide_mpp, max(W, H) / cfg.overview_max_side, 1.0)
            img = np.asarray(read_overview(s, ds))
    scale = (W / img.shape[1], H / img.shape[0])
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    med = cv2.medianBlur(hsv[:, :, 1], CLAM_SEG["mthresh"])
    _, binary = cv2.threshold(med, CLAM_SEG["sthresh"], CLAM_SEG["sthresh_up"], cv2.THRESH_BINARY)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((CLAM_SEG["close"],) * 2, np.uint8))
    ref_area = CLAM_REF_PATCH ** 2 / (scale[0] * scale[1])
    # CLAM's a_t = 100 reference patches (26 Mpx at level 0) drops every contour of these small slides;
    # use our smallest tissue piece / largest filled hole instead (same area filter on both sides)
    a_t = cfg.min_area_um2 / slide_mpp ** 2 / (scale[0] * scale[1])
    a_h = cfg.max_hole_area_um2 / slide_mpp ** 2 / (scale[0] * scale[1])
    del ref_area
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return 0
    hier = np.squeeze(hierarchy, axis=(0,))[:, 2:]
    fg, holes = [], []
    for ci in np.flatnonzero(hier[:, 1] == -1):
        hole_ids = np.flatnonzero(hier[:, 1] == ci)
        a = cv2.contourArea(contours[ci]) - sum(cv2.contourArea(contours[h]) for h in hole_ids)
        if a == 0 or a <= a_t:
            continue
        hs = sorted((contours[h] for h in hole_ids), key=cv2.contourArea, reverse=True)[:CLAM_FILTER["max_n_holes"]]
        fg.append(contours[ci])
        holes.append([h for h in hs if cv2.contourArea(h) > a_h])
    sc = np.array(scale)
    fg = [np.array(c * sc, dtype=np.int32) for c in fg]
    holes = [[np.array(h * sc, dtype=np.int32) for h in hh] for hh in holes]
    ps = int(round(cfg.tile_size * cfg.target_mpp / slide_mpp))  # patch at level 0 (patch_level 0)
    shift = int(ps // 2 * 0.5)
    kept = 0
    for cont, hh in zip(fg, holes, strict=True):
        x0, y0, w, h = cv2.boundingRect(cont)
        for x in range(x0, x0 + w, ps):
            for y in range(y0, y0 + h, ps):
                cx, cy = x + ps // 2, y + ps // 2
                pts = ((cx - shift, cy - shift), (cx + shift, cy + shift), (cx + shift, cy - shift),
                       (cx - shift, cy + shift))
                if not any(cv2.pointPolygonTest(cont, (float(px), float(py)), False) >= 0 for px, py in pts):
                    continue
                if any(cv2.pointPolygonTest(hole, (x + ps / 2, y + ps / 2), False) > 0 for hole in hh):
                    continue
                kept += 1
    return kept


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


def ours_plan(path: Path | Callable[[], Slide], mpp: float | None, cfg: TileConfig) -> int:
    with _open(path) as s:
        return len(plan_tiles(s, cfg, mpp).coords)


class MosaicSlide(Slide):
    """A WSI-sized slide that exists only as its overview: the real CMU-1-Small-Region overview repeated
    `reps` x `reps` times (reps=16: 35k x 47k px at 0.5 µm/px, 18 x 24 mm, a 20x resection WSI). Planners
    only ever read the overview, so this times their planning at a realistic grid size; reading level 0
    raises."""

    backend = "mosaic"

    def __init__(self, overview: Image.Image, thumb_ds: float, mpp: float, reps: int) -> None:
        mos = Image.new("RGB", (overview.width * reps, overview.height * reps))
        for i in range(reps):
            for j in range(reps):
                mos.paste(overview, (i * overview.width, j * overview.height))
        self._thumb = mos
        dims = (int(round(mos.width * thumb_ds)), int(round(mos.height * thumb_ds)))
        super().__init__(Path(f"mosaic{reps}.svs"), [dims], [1.0], {}, mpp, "mosaic")

    def associated_thumbnail(self) -> Image.Image:
        return self._thumb

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        raise RuntimeError("a planner read level-0 pixels of the mosaic slide")


def interleaved(methods: dict[str, Callable[[], int]], repeats: int, setup: Callable[[], None],
                tag: str, min_time: float = 0.3, stat: str = "median",
                clock: Callable[[], float] = time.perf_counter) -> dict[str, tuple[float, int]]:
    """One untimed warm-up call per method, then `repeats` rounds calling every method in turn (so
    load changes on a shared machine hit all methods alike); returns {name: (median s, result)}.

    A method faster than `min_time` is called k times in a row per round (k fixed by the warm-up) and
    its round time is the mean of those k calls, so millisecond planners are not timer noise."""
    inner: dict[str, int] = {}
    for name, fn in methods.items():
        setup()
        t0 = clock()
        fn()
        dt = clock() - t0
        inner[name] = max(1, min(50, int(min_time / max(dt, 1e-4))))
    times: dict[str, list[float]] = {k: [] for k in methods}
    res: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            total = 0.0
            for _k in range(inner[name]):
                setup()
                t0 = clock()
                res[name] = fn()
                total += clock() - t0
            times[name].append(total / inner[name])
    for name, ts in times.items():
        print(f"  {tag:<12} {name:<16} runs {' '.join(f'{t:.3f}' for t in ts)}  median {statistics.median(ts):.3f}s"
              f"  min {min(ts):.3f}s",
              flush=True)
    reduce = min if stat == "min" else statistics.median
    return {k: (reduce(v), res[k]) for k, v in times.items()}


def _best_ms(fn: Callable[[], object], n: int, clock: Callable[[], float] = time.perf_counter) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best * 1000


def thumbnail_strips_decoder(path: Path) -> Callable[[int], np.ndarray] | None:
    """Decode the SVS scanner thumbnail ourselves: each JPEG strip (tables merged in, an Adobe marker saying
    RGB, as its TIFF photometric does) with Pillow, at full size (scale 1) or DCT-scaled (`draft`, scale 2:
    half size, fewer pixels through the IDCT). The alternative to OpenSlide's full-size decode that
    `--breakdown` times; None when the thumbnail is not stripped JPEG."""
    import io

    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        page = next((pg for pg in tf.pages[1:] if "->" in (pg.description or "")), None)  # Aperio thumbnail
        if page is None or page.compression != 7 or page.is_tiled or page.jpegtables is None:
            return None
        strips = []
        for off, nb in zip(page.dataoffsets, page.databytecounts, strict=True):
            tf.filehandle.seek(off)
            strips.append(tf.filehandle.read(nb))
        tables = page.jpegtables
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    streams = [b"\xff\xd8" + adobe_rgb + tables[2:-2] + st[2:] for st in strips]

    def decode(scale: int) -> np.ndarray:
        rows = []
        for st in streams:
            im = Image.open(io.BytesIO(st))
            if scale > 1:
                im.draft("RGB", (im.width // scale, im.height // scale))
            rows.append(np.asarray(im.convert("RGB")))
        return np.concatenate(rows)
    return decode


def breakdown(path: Path, mpp: float | None, cfg: TileConfig, n: int = 50,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Where a planner's time goes on one slide: fastest of `n` calls (ms) of each part. The parts both
    planners share (open, scanner-thumbnail decode, resize to the mask resolution) and each planner's own
    part (on an in-memory slide whose thumbnail is that resized overview, so nothing is decoded)."""
    best = functools.partial(_best_ms, clock=clock)
    with open_slide(path) as s:
        slide_mpp = mpp or s.mpp
        W, H = s.dimensions
        ds = max(cfg.mask_mpp / slide_mpp, max(W, H) / cfg.overview_max_side, 1.0)
        r = {"open (OpenSlide)": best(lambda: open_slide(path).close(), n),
             "thumbnail decode (OpenSlide) + RGBA->RGB": best(s.associated_thumbnail, n)}
        thumb = s.associated_thumbnail()
        dec = thumbnail_strips_decoder(path)
        if dec is not None:  # not used by either planner: what decoding the thumbnail ourselves would cost
            assert np.array_equal(dec(1), np.asarray(thumb)), "strip decode differs from OpenSlide's"
            r["(alt.) thumbnail decode, Pillow per strip, full size"] = best(lambda: dec(1), n)
            r["(alt.) thumbnail decode, Pillow per strip, DCT 1/2"] = best(lambda: dec(2), n)
        tw, th = max(1, round(W / ds)), max(1, round(H / ds))
        r["resize to the mask resolution (Pillow BOX)"] = best(
            lambda: thumb.resize((tw, th), Image.Resampling.BOX, reducing_gap=3.0), n)
        ov = read_overview(s, ds)
    # end to end, fastest of n single calls (the least disturbed by other load on a shared machine)
    r["(end to end) ours plan: open + overview + mask + coordinates"] = best(
        lambda: ours_plan(path, mpp, cfg), n)
    r["(end to end) CLAM-style: open + overview + segment + patch"] = best(lambda: clam_plan(path, slide_mpp, cfg), n)
    mem = MosaicSlide(ov, W / ov.width, slide_mpp, 1)
    r["ours own: mask + grid (plan_tiles)"] = best(lambda: ours_plan(lambda: mem, slide_mpp, cfg), n)
    r["CLAM own: segmentTissue + process_contours"] = best(lambda: clam_plan(lambda: mem, slide_mpp, cfg), n)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("DOMAINFM_DATA"), help="shared data dir (DOMAINFM_DATA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tcga-mpp", type=float, default=0.25,
                    help="ASSUMED µm/px of the TCGA slide (it has no resolution metadata)")
    ap.add_argument("--only", choices=["cmu", "tcga"], help="benchmark one slide only")
    ap.add_argument("--coords-only", action="store_true", help="skip the tile-image timings")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic of the repeats behind the tables (min: the run least disturbed by other load)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (process_time, all its threads), which "
                    "other processes' load on a shared machine barely changes")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the parts of each planner (fastest of 50 calls) and the best ratio they allow")
    ap.add_argument("--mosaic", type=int, default=16,
                    help="also plan a WSI-sized mosaic of the CMU overview repeated N x N times (0: skip)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if not args.data:
        raise SystemExit("set DOMAINFM_DATA or pass --data")
    sdir = Path(args.data) / "pathology" / "slides"
    slides = [(sdir / "CMU-1-Small-Region.svs", None), (sdir / "TCGA-CR-7395-01A-01-TS1.svs", args.tcga_mpp)]
    if args.only:
        slides = [sl for sl in slides if sl[0].name.lower().startswith(args.only)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_tiling_"))
    cfg = TileConfig(target_mpp=0.5, tile_size=224, min_tissue=0.5, jpeg_quality=90, tile_format="jpg")
    rows = []
    totals = {k: 0.0 for k in ("b_coords", "c_plan", "o_plan", "o_full", "b_tiles", "o_tiles")}
    out, bdir = tmp / "ours", tmp / "base"
    cfg_t = TileConfig(**{**cfg.__dict__, "save_tiles": True})

    def clean() -> None:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(bdir, ignore_errors=True)

    print(f"tiling benchmark: target 0.5 µm/px, 224 px, min tissue 0.5, {args.stat} of {args.repeats} repeats, "
          f"{args.clock} clock",
          flush=True)
    for path, assumed in slides:
        with open_slide(path) as s:
            mpp = assumed or s.mpp
            ngrid_base = ((s.dimensions[0] - round(224 * 0.5 / mpp)) // round(224 * 0.5 / mpp) + 1) * (
                (s.dimensions[1] - round(224 * 0.5 / mpp)) // round(224 * 0.5 / mpp) + 1)
        m = interleaved({
            "baseline coords": lambda p=path, m=mpp: baseline(p, m, cfg, None),
            "clam-style plan": lambda p=path, m=mpp: clam_plan(p, m, cfg),
            "clam own level": lambda p=path, m=mpp: clam_plan(p, m, cfg, own_level=True),
            "ours plan": lambda p=path, a=assumed: ours_plan(p, a, cfg),
            "ours tile_slide": lambda p=path, a=assumed: tile_slide(p, out, cfg, mpp=a)["n_tiles"],
            **({} if args.coords_only else {
                "baseline tiles": lambda p=path, m=mpp: baseline(p, m, cfg, bdir),
                "ours tiles": lambda p=path, a=assumed: tile_slide(p, out, cfg_t, mpp=a)["n_tiles"]}),
        }, args.repeats, clean, path.name[:12], stat=args.stat, clock=clock)
        vals = list(m.values()) + ([(float("nan"), 0)] * 2 if args.coords_only else [])
        (tb, nb), (tc, nc), (tcl, ncl), (tp, npn), (tf, _), (tbt, nbt), (tot, not_) = vals
        clean()
        for k, v in zip(totals, (tb, tc, tp, tf, tbt, tot), strict=True):
            totals[k] += v
        rows.append((path.name, mpp, ngrid_base, nb, nc, npn, tb, tc, tp, tf, tbt, tot, nbt, not_, tcl, ncl))
    shutil.rmtree(tmp, ignore_errors=True)
    for (name, mpp, ngrid, nb, nc, npn, tb, tc, tp, tf, tbt, tot, nbt, not_, tcl, ncl) in rows:
        print(f"\n{name}  (slide {mpp} µm/px{' ASSUMED' if 'TCGA' in name else ''}; grid {ngrid} tiles)")
        print(f"  slide -> coordinates   per-tile loop {tb:7.4f}s ({ngrid / tb:8.0f} grid tiles/s, kept {nb})")
        print(f"                         CLAM-style    {tc:7.4f}s ({ngrid / tc:8.0f} grid tiles/s, kept {nc})")
        print(f"                         CLAM own lvl  {tcl:7.4f}s ({ngrid / tcl:8.0f} grid tiles/s, kept {ncl})"
              "  (its seg level, read_region)")
        print(f"                         ours plan     {tp:7.4f}s ({ngrid / tp:8.0f} grid tiles/s, kept {npn})"
              f"  x{tb / tp:.1f} vs loop, x{tc / tp:.2f} vs CLAM-style, x{tcl / tp:.2f} vs CLAM own level")
        print(f"                         ours full {tf:6.3f}s (+h5, thumbnail, mask, overlay, grid, GeoJSON)"
              f"  x{tb / tf:.1f}")
        print(f"  slide -> tile images   baseline {tbt:7.3f}s ({nbt / tbt:6.0f} tiles/s, {nbt} tiles)")
        print(f"                         ours     {tot:7.3f}s ({not_ / tot:6.0f} tiles/s, {not_} tiles)"
              f"  x{tbt / tot:.2f}")
    if args.breakdown:
        for path, assumed in slides:
            parts = breakdown(path, assumed, cfg, clock=clock)
            shared = sum(v for k, v in parts.items() if " own" not in k and not k.startswith("("))
            own_o, own_c = parts["ours own: mask + grid (plan_tiles)"], parts["CLAM own: segmentTissue + process_contours"]
            print(f"\n{path.name}: parts, fastest of 50 calls (ms)")
            for k, v in parts.items():
                print(f"  {k:<46} {v:7.3f}")
            e_o = parts["(end to end) ours plan: open + overview + mask + coordinates"]
            e_c = parts["(end to end) CLAM-style: open + overview + segment + patch"]
            print(f"  end to end: ours x{e_c / e_o:.2f} vs CLAM-style")
            print(f"  shared by both planners {shared:.3f} ms; ours/CLAM-style from the parts "
                  f"x{(shared + own_c) / (shared + own_o):.2f}; with ours' own part free "
                  f"x{(shared + own_c) / shared:.2f} at most")
    t = totals
    if args.mosaic:
        with open_slide(sdir / "CMU-1-Small-Region.svs") as s:
            # the overview at the resolution both planners use for a slide this size (max side 2048 px), as a
            # real WSI provides it from a pyramid level; the mosaic slide is that overview repeated
            ds = args.mosaic * max(s.dimensions) / cfg.overview_max_side
            ov = read_overview(s, ds)
            mosaic = MosaicSlide(ov, s.dimensions[0] / ov.width, s.mpp, args.mosaic)
        W, H = mosaic.dimensions
        ts0 = round(cfg.tile_size * cfg.target_mpp / mosaic.mpp)
        grid = (W // ts0) * (H // ts0)
        mm = interleaved({"clam-style plan": lambda: clam_plan(lambda: mosaic, None, cfg),
                          "ours plan": lambda: ours_plan(lambda: mosaic, None, cfg)},
                         args.repeats, lambda: None, f"mosaic{args.mosaic}", stat=args.stat,
                         clock=clock)
        (tc, nc), (tp, npn) = mm.values()
        if args.breakdown:
            fc = _best_ms(lambda: clam_plan(lambda: mosaic, None, cfg), 10, clock) / 1000
            fo = _best_ms(lambda: ours_plan(lambda: mosaic, None, cfg), 10, clock) / 1000
            print(f"  mosaic, fastest of 10 calls: CLAM-style {fc:.4f}s, ours {fo:.4f}s, x{fc / fo:.2f}")
        print(f"\nmosaic {args.mosaic}x{args.mosaic} of the CMU overview ({W} x {H} level-0 px at {mosaic.mpp} µm/px, "
              f"{W * mosaic.mpp / 1000:.1f} x {H * mosaic.mpp / 1000:.1f} mm; grid {grid} tiles; overview only)")
        print(f"  slide -> coordinates   CLAM-style    {tc:7.4f}s ({grid / tc:8.0f} grid tiles/s, kept {nc})")
        print(f"                         ours plan     {tp:7.4f}s ({grid / tp:8.0f} grid tiles/s, kept {npn})"
              f"  x{tc / tp:.2f} vs CLAM-style")
    print(f"\nall slides: coordinates x{t['b_coords'] / t['o_plan']:.1f} vs the per-tile loop, "
          f"x{t['c_plan'] / t['o_plan']:.2f} vs CLAM-style (plan); "
          f"x{t['b_coords'] / t['o_full']:.1f} (end to end); tile images x{t['b_tiles'] / t['o_tiles']:.2f}")


if __name__ == "__main__":
    main()
