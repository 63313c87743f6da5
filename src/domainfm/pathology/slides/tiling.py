"""Tile one slide at a target resolution: level choice, tissue-aware grid, outputs, and re-reading.

Geometry (all sizes in pixels):
  slide_mpp      µm per level-0 px (metadata, `--slide-mpp` fallback, or a per-slide CSV override)
  level          the coarsest pyramid level whose µm/px is <= target_mpp (read there, then downsize)
  read_size      round(tile_size * target_mpp / level_mpp): the tile's width at `level`
  grid           at `level`: x = i * stride, stride = round(read_size * (1 - overlap)); full tiles only
  coords         level-0 top-left = round(x * level_downsample)           -> `coords` (N, 2) int64
  level0_tile_size = round(read_size * level_downsample)
A tile is kept when its tissue fraction (exact area of the overview mask under the tile) is
>= min_tissue: selecting coordinates decodes only the overview, never level 0.

Outputs of `tile_slide(slide, OUT, cfg)`: `OUT/coords/<id>.h5` (`coords` with CLAM's and TRIDENT's
attributes on the dataset -- see `slides.coords` --, `tissue_fraction`, our own facts on the file root), `OUT/thumbnails/<id>.png` (clean, `thumb_downsample` in the attrs),
`OUT/grids/<id>.png` (tile grid drawn), `OUT/masks/<id>.png` + `<id>_overlay.png`, `OUT/geojson/<id>.geojson`
(QuPath), and with `save_tiles` the images `OUT/tiles/<id>/<x>_<y>.<fmt>`. Every file is written
atomically; the coords file last, so its presence means the slide is complete.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_bytes, atomic_write_text
from domainfm.pathology.slides import regions, tissue
from domainfm.pathology.slides.coords import FORMAT_VERSION, clam_trident_attrs, read_coords
from domainfm.pathology.slides.readers import MPP_PER_POWER, Slide, open_slide


class MissingMppError(UserError):
    """The slide has no resolution and none was given."""


@dataclass
class TileConfig:
    target_mpp: float = field(default=0.5, metadata={"help": "tile resolution, µm per pixel"})
    tile_size: int = field(default=224, metadata={"help": "tile width/height in pixels at target_mpp"})
    min_tissue: float = field(default=0.5, metadata={"help": "keep tiles with tissue fraction >= this"})
    overlap: float = field(default=0.0, metadata={"help": "fraction of a tile shared with its neighbour"})
    slide_mpp: float | None = field(default=None, metadata={"help": "µm/px for slides without metadata"})
    allow_upsample: bool = field(default=False, metadata={"help": "tile slides coarser than target_mpp"})
    mask_mpp: float = field(default=4.0, metadata={"help": "tissue mask resolution, µm/px"})
    thumb_mpp: float = field(default=4.0, metadata={"help": "thumbnail resolution, µm/px"})
    overview_max_side: int = field(default=2048, metadata={"help": "cap on the thumbnail size, px"})
    tissue_threshold: float | None = field(default=None, metadata={"help": "saturation threshold; None=Otsu"})
    min_saturation: float = field(default=0.05, metadata={"help": "floor for the Otsu threshold"})
    close_um: float = field(default=16.0, metadata={"help": "mask closing radius, µm"})
    open_um: float = field(default=8.0, metadata={"help": "mask opening radius, µm"})
    min_area_um2: float = field(default=10_000.0, metadata={"help": "smallest tissue piece kept, µm²"})
    max_hole_area_um2: float = field(default=20_000.0, metadata={"help": "holes smaller than this filled"})
    save_tiles: bool = field(default=False, metadata={"help": "write tile images under OUT/tiles/<slide_id>"})
    tile_format: str = field(default="jpg", metadata={"help": "jpg or png"})
    jpeg_quality: int = field(default=90, metadata={"help": "JPEG quality of saved tiles"})
    backend: str = field(default="auto", metadata={"help": "auto, openslide, tiffslide or pillow"})
    use_associated_thumbnail: bool = field(default=True, metadata={"help": "mask from the scanner thumbnail"})
    max_region: int = field(default=4096, metadata={"help": "widest region read at once, level px"})

    def validate(self) -> None:
        if self.target_mpp <= 0 or self.tile_size < 8:
            raise UserError("--target-mpp must be > 0 and --tile-size >= 8")
        if not 0.0 <= self.min_tissue <= 1.0 or not 0.0 <= self.overlap < 1.0:
            raise UserError("--min-tissue must be in [0, 1] and --overlap in [0, 1)")
        if self.tile_format not in ("jpg", "png"):
            raise UserError(f"--tile-format must be jpg or png, not {self.tile_format!r}")

    def geometry_key(self) -> dict[str, Any]:
        """Fields that change the coordinates or tiles (a rerun with other values redoes the slide)."""
        d = asdict(self)
        for k in ("backend", "max_region"):
            d.pop(k)
        return d


@dataclass
class TilePlan:
    slide_mpp: float
    mpp_source: str
    level: int
    level_mpp: float
    downsample: float
    read_size: int
    stride: int
    coords: np.ndarray  # (N, 2) int64 level-0 top-left
    level_coords: np.ndarray  # (N, 2) int64 at `level`
    tissue_fraction: np.ndarray  # (N,) float32
    n_grid: int
    thumb: Image.Image
    thumb_ds: tuple[float, float]
    mask_ds: tuple[float, float]
    mask: np.ndarray
    threshold: float
    upsampled: bool

    @property
    def level0_tile_size(self) -> int:
        return int(round(self.read_size * self.downsample))


def resolve_mpp(slide: Slide, cfg: TileConfig, override: float | None = None) -> tuple[float, str]:
    """µm/px of level 0: a per-slide override (CSV) > plausible slide metadata > objective power >
    `cfg.slide_mpp` > failure. Implausible metadata (a 300-dpi default) never counts."""
    if override is not None:
        return float(override), "--slide-mpp csv"
    if slide.mpp is not None:
        return float(slide.mpp), slide.mpp_source
    note = f" (not trusted: {'; '.join(slide.mpp_rejected)})" if slide.mpp_rejected else ""
    if cfg.slide_mpp is not None:
        return float(cfg.slide_mpp), "--slide-mpp" + note
    raise MissingMppError(f"{slide.slide_id}: no resolution (µm/px) in the slide's metadata{note} and none "
                          "given; pass --slide-mpp VALUE or --slide-mpp CSV with a row 'slide_id,mpp'")


def choose_level(slide_mpp: float, downsamples: list[float], target_mpp: float,
                 allow_upsample: bool = False, tol: float = 0.02) -> tuple[int, bool]:
    """Coarsest level whose µm/px <= target (within `tol`), read there and downsized to the target.
    Returns (level, upsampled). A slide coarser than the target fails unless `allow_upsample`."""
    mpps = [slide_mpp * d for d in downsamples]
    ok = [lv for lv, m in enumerate(mpps) if m <= target_mpp * (1 + tol)]
    if ok:
        return max(ok, key=lambda lv: mpps[lv]), False
    if not allow_upsample:
        raise UserError(f"slide resolution {slide_mpp:.4g} µm/px is coarser than --target-mpp {target_mpp:g}; "
                        "tiling would upsample (pass --allow-upsample to do it anyway)")
    return 0, True


def plan_tiles(slide: Slide, cfg: TileConfig, mpp: float | None = None) -> TilePlan:
    """Level, tissue mask and the coordinates of kept tiles; reads only the overview image."""
    slide_mpp, src = resolve_mpp(slide, cfg, mpp)
    level, upsampled = choose_level(slide_mpp, slide.level_downsamples, cfg.target_mpp, cfg.allow_upsample)
    ds = slide.level_downsamples[level]
    level_mpp = slide_mpp * ds
    read_size = max(1, int(round(cfg.tile_size * cfg.target_mpp / level_mpp)))
    stride = max(1, int(round(read_size * (1.0 - cfg.overlap))))
    # thumbnail: thumb_mpp µm/px, at most overview_max_side px, never finer than level 0;
    # the mask is computed on a coarser copy of it (mask_mpp), which is all tile selection needs
    W, H = slide.dimensions
    over_ds = max(cfg.thumb_mpp / slide_mpp, max(W, H) / cfg.overview_max_side, 1.0)
    thumb = regions.read_overview(slide, over_ds, cfg.use_associated_thumbnail)
    thumb_ds = (W / thumb.width, H / thumb.height)
    m_ds = max(cfg.mask_mpp / slide_mpp, over_ds)
    small = thumb if m_ds <= over_ds * 1.0001 else thumb.resize(
        (max(1, round(W / m_ds)), max(1, round(H / m_ds))), Image.Resampling.BOX, reducing_gap=3.0)
    mask_ds = (W / small.width, H / small.height)
    params = tissue.TissueParams(cfg.tissue_threshold, cfg.min_saturation, 1.0, cfg.close_um, cfg.open_um,
                                 cfg.min_area_um2, cfg.max_hole_area_um2)
    mask, thr = tissue.tissue_mask(np.asarray(small), slide_mpp * mask_ds[0], params)
    # grid at the read level, full tiles only (row-major: y, then x)
    lw, lh = slide.level_dimensions[level]
    xs = np.arange(0, lw - read_size + 1, stride, dtype=np.int64)
    ys = np.arange(0, lh - read_size + 1, stride, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    lc = np.stack([gx.ravel(), gy.ravel()], axis=1)
    c0 = np.rint(lc * ds).astype(np.int64)
    frac = tissue.rect_fractions(tissue.integral_image(mask), c0[:, 0].astype(np.float64),
                                 c0[:, 1].astype(np.float64), read_size * ds, read_size * ds, *mask_ds)
    keep = frac >= cfg.min_tissue - 1e-9 if cfg.min_tissue > 0 else np.ones(len(frac), bool)
    return TilePlan(slide_mpp, src, level, level_mpp, ds, read_size, stride, c0[keep], lc[keep],
                    frac[keep].astype(np.float32), len(lc), thumb, thumb_ds, mask_ds, mask, thr, upsampled)


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=1)


def _write_tiles(slide: Slide, plan: TilePlan, cfg: TileConfig, out_dir: Path, pool: ThreadPoolExecutor) -> None:
    final = out_dir / "tiles" / slide.slide_id
    part = out_dir / "tiles" / f".{slide.slide_id}.partial"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    fmt = "JPEG" if cfg.tile_format == "jpg" else "PNG"
    opts: dict[str, Any] = {"quality": cfg.jpeg_quality} if fmt == "JPEG" else {"compress_level": 1}

    def save(arr: np.ndarray, name: str) -> None:
        Image.fromarray(arr).save(part / name, format=fmt, **opts)

    # reading (slide library) and encoding (Pillow) both release the GIL: overlap them, with a
    # bounded queue of pending encodes so memory stays flat on huge slides
    pending: list[Future[None]] = []
    for i, arr in regions.iter_tile_arrays(slide, plan.level, plan.level_coords, plan.read_size,
                                           cfg.tile_size, cfg.max_region):
        x, y = plan.coords[i]
        pending.append(pool.submit(save, np.ascontiguousarray(arr), f"{x}_{y}.{cfg.tile_format}"))
        if len(pending) >= 64:
            for f in pending[:32]:
                f.result()
            pending = pending[32:]
    for f in pending:
        f.result()
    if final.exists():
        shutil.rmtree(final)
    os.replace(part, final)


def tile_slide(slide_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], cfg: TileConfig,
               mpp: float | None = None) -> dict[str, Any]:
    """Tile one slide into `out_dir` (layout in the module docstring); returns its summary row.

    `mpp` overrides the slide's resolution (a per-slide CSV value). Raises `UserError` subclasses
    with a one-line reason for unreadable slides or a missing resolution."""
    import h5py

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    with open_slide(slide_path, backend=cfg.backend) as slide:
        sid = slide.slide_id
        plan = plan_tiles(slide, cfg, mpp)
        polys = tissue.mask_polygons(plan.mask, *plan.mask_ds)
        geo = tissue.polygons_geojson(polys, sid, plan.slide_mpp)
        with ThreadPoolExecutor(max_workers=2) as pool:  # PNG/JPEG encoding overlaps tile reading
            jobs = [
                pool.submit(atomic_write_text, out / "geojson" / f"{sid}.geojson", json.dumps(geo)),
                pool.submit(_save_png, plan.thumb, out / "thumbnails" / f"{sid}.png"),
                pool.submit(_save_png, Image.fromarray(plan.mask.astype(np.uint8) * 255),
                            out / "masks" / f"{sid}.png"),
                pool.submit(_save_png, tissue.draw_overlay(plan.thumb, plan.mask, polys, plan.thumb_ds),
                            out / "masks" / f"{sid}_overlay.png"),
                pool.submit(_save_png, tissue.draw_grid(plan.thumb, plan.coords, plan.read_size * plan.downsample,
                                                        plan.thumb_ds, polys), out / "grids" / f"{sid}.png"),
            ]
            if cfg.save_tiles:
                _write_tiles(slide, plan, cfg, out, pool)
            for j in jobs:
                j.result()
        # file root: our own facts (names CLAM and TRIDENT do not use); the coords dataset: theirs
        root = {
            "format_version": FORMAT_VERSION, "slide_path": str(Path(slide_path).resolve()),
            "backend": slide.backend, "tile_size": cfg.tile_size, "target_mpp": cfg.target_mpp,
            "slide_mpp": plan.slide_mpp, "mpp_source": plan.mpp_source, "level_mpp": plan.level_mpp,
            "stride": plan.stride, "level0_stride": int(round(plan.stride * plan.downsample)),
            "min_tissue": cfg.min_tissue, "tissue_threshold": plan.threshold, "upsampled": plan.upsampled,
            "resample": "bilinear", "n_grid": plan.n_grid, "thumb_downsample": plan.thumb_ds[0],
            "mask_downsample_xy": list(plan.mask_ds), "tile_format": cfg.tile_format if cfg.save_tiles else "",
            "config": json.dumps(asdict(cfg)), "max_region": cfg.max_region,
        }
        dset_attrs = clam_trident_attrs(
            patch_level=plan.level, patch_size=plan.read_size, downsample=plan.downsample,
            level_dim=slide.level_dimensions[plan.level], level0_dim=slide.dimensions,
            level0_magnification=MPP_PER_POWER / plan.slide_mpp, overlap_px=plan.read_size - plan.stride,
            name=sid, save_dir=str(out.resolve()))
        # built in memory, then written as bytes: a full disk fails in a plain write (a clean one-line error),
        # never inside HDF5, whose file handle cannot be closed after a failed write (h5py then crashes at exit)
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            dset = f.create_dataset("coords", data=plan.coords.astype(np.int64).reshape(-1, 2))
            dset.attrs.update(dset_attrs)
            f.create_dataset("tissue_fraction", data=plan.tissue_fraction)
            f.attrs.update(root)
        atomic_write_bytes(out / "coords" / f"{sid}.h5", buf.getvalue())
    return {"slide_id": sid, "status": "ok", "n_tiles": int(len(plan.coords)), "reason": "",
            "level": plan.level, "slide_mpp": round(plan.slide_mpp, 5), "mpp_source": plan.mpp_source,
            "n_grid": plan.n_grid, "seconds": round(time.perf_counter() - t0, 3),
            "coords_h5": str(out / "coords" / f"{sid}.h5")}


def read_tiles(coords_h5: str | os.PathLike[str], slide_path: str | os.PathLike[str] | None = None,
               batch_size: int = 64, max_region: int | None = None
               ) -> Iterator[tuple[np.ndarray, list[Image.Image]]]:
    """Re-read the tiles of a coords file exactly as tiling defined them (same level, same region
    runs, resized to `tile_size`), yielding (coords (b, 2) int64, [PIL RGB]) in file order.

    `slide_path` replaces the path stored in the file (slides that moved)."""
    p = Path(coords_h5)
    info = read_coords(p)  # ours, CLAM's or TRIDENT's layout
    coords, a = info.coords, info.attrs
    if slide_path is None and info.slide_path is None:
        raise UserError(f"{p.name} does not record its slide ({info.flavour} layout); give the slide path")
    path = Path(slide_path) if slide_path is not None else Path(str(info.slide_path))
    max_region = int(max_region or a.get("max_region", 4096))
    backend = str(a.get("backend", "auto"))
    with open_slide(path, backend=backend if backend in ("openslide", "tiffslide", "pillow") else "auto") as s:
        dims = ([a["level0_width"], a["level0_height"]] if "level0_width" in a else a.get("slide_dimensions"))
        if dims is not None and list(s.dimensions) != [int(v) for v in dims]:
            raise UserError(f"{path} is not the slide tiled in {p.name}: dimensions {s.dimensions} "
                            f"!= {tuple(int(v) for v in dims)}")
        level, read_size, tile_size, _ = info.read_geometry(s.level_downsamples)
        if info.flavour in ("clam", "trident"):
            # their coordinates are arbitrary level-0 points, read one by one as their loaders do
            # (a run would shift later tiles by the sub-pixel remainder of coordinate / downsample)
            tiles: Iterator[tuple[int, np.ndarray]] = (
                (i, regions.fit_tile(s.read_region_array((int(c[0]), int(c[1])), level, (read_size, read_size)),
                                     tile_size)) for i, c in enumerate(coords))
        else:
            lc = regions.level_coords(coords, s.level_downsamples[level])
            tiles = regions.iter_tile_arrays(s, level, lc, read_size, tile_size, max_region)
        buf_i: list[int] = []
        buf_t: list[Image.Image] = []
        for i, arr in tiles:
            buf_i.append(i)
            buf_t.append(Image.fromarray(arr))
            if len(buf_t) == batch_size:
                yield coords[buf_i], buf_t
                buf_i, buf_t = [], []
        if buf_t:
            yield coords[buf_i], buf_t
