"""Coordinates files (`<slide_id>.h5`) in the layouts CLAM and TRIDENT read and write.

Both tools store the level-0 top-left corners of the kept patches as the dataset ``coords`` (N, 2)
and the patching facts as *attributes of that dataset* (not of the file root):

CLAM (``WholeSlideImage.process_contour`` -> ``save_hdf5(..., attr_dict={'coords': attr})``; read back by
``Whole_Slide_Bag_FP`` as ``f['coords'].attrs['patch_level']`` / ``['patch_size']``):
  patch_level            pyramid level the patches are read at
  patch_size             patch width in pixels *of patch_level* (CLAM reads
                         ``read_region(coord, patch_level, (patch_size, patch_size))``)
  downsample             (dx, dy) downsample of patch_level
  downsampled_level_dim  (W, H) of patch_level
  level_dim              (W, H) of patch_level
  name, save_path        slide name, output folder

TRIDENT (``trident.IO.coords_to_h5`` / ``OpenSlideWSI.extract_tissue_coords``; read back by
``trident.IO.read_coords``, which needs patch_size, level0_magnification and target_magnification):
  patch_size             patch width in pixels at target_magnification
  patch_size_level0      the same patch's width in level-0 pixels (= patch_size * level0_mag / target_mag)
  level0_magnification   objective magnification of level 0
  target_magnification   magnification the patches are made at
  overlap                overlap of neighbours in pixels (at target_magnification)
  name, savetodir, level0_width, level0_height

One ``patch_size`` serves both because we make the two definitions coincide: we write
``target_magnification = level0_magnification / downsample(patch_level)``, i.e. TRIDENT's "target" is
the magnification of the level CLAM reads. Both tools then read the same level-0 square
(``patch_size_level0``) at the same pixel count (``patch_size``); our own ``tile_size`` (a file-root
attribute) says what both resize to for the encoder. Our other facts (resolution and its source,
tissue threshold, thumbnail scale, tiling config) sit on the file root under names neither tool uses.

`read_coords` reads all three layouts (ours, CLAM's, TRIDENT's, plus our format 1 with root attributes)
into one `CoordsInfo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError

FORMAT_VERSION = 2


def plain_attr(v: Any) -> Any:
    """An HDF5 attribute value as plain Python (bytes -> str, numpy scalar -> its item)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def clam_trident_attrs(*, patch_level: int, patch_size: int, downsample: float, level_dim: tuple[int, int],
                       level0_dim: tuple[int, int], level0_magnification: float, overlap_px: int, name: str,
                       save_dir: str) -> dict[str, Any]:
    """The attributes of the ``coords`` dataset, under CLAM's and TRIDENT's names (see module docstring)."""
    target_mag = level0_magnification / downsample
    return {
        # CLAM
        "patch_level": int(patch_level), "patch_size": int(patch_size),
        "downsample": np.asarray([downsample, downsample], dtype=np.float64),
        "downsampled_level_dim": np.asarray(level_dim, dtype=np.int64),
        "level_dim": np.asarray(level_dim, dtype=np.int64), "name": name, "save_path": save_dir,
        # TRIDENT (patch_size above is also TRIDENT's: pixels at target_magnification)
        "patch_size_level0": int(round(patch_size * downsample)),
        "level0_magnification": float(level0_magnification), "target_magnification": float(target_mag),
        "overlap": int(overlap_px), "savetodir": save_dir,
        "level0_width": int(level0_dim[0]), "level0_height": int(level0_dim[1]),
    }


@dataclass
class CoordsInfo:
    """What a coordinates file says, whichever tool wrote it."""

    coords: np.ndarray  # (N, 2) int64 level-0 top-left corners
    attrs: dict[str, Any]  # file-root attributes updated with the coords dataset's (dataset wins)
    flavour: str  # "domainfm", "domainfm-v1", "clam" or "trident"
    patch_level: int | None  # level the patch is read at (None: TRIDENT, chosen from the slide)
    patch_size: int  # px at patch_level (CLAM/ours) or at target_magnification (TRIDENT)
    level0_size: float | None  # patch width in level-0 px (None: CLAM file without `downsample`)
    tile_size: int  # px the patch is resized to before the encoder
    slide_path: str | None

    def read_geometry(self, level_downsamples: list[float]) -> tuple[int, int, int, float]:
        """(level, read_size at level, tile_size, level-0 size) for a slide with these downsamples."""
        if self.patch_level is not None:
            if not 0 <= self.patch_level < len(level_downsamples):
                raise UserError(f"coords file asks for level {self.patch_level}, the slide has "
                                f"{len(level_downsamples)} levels")
            ds = level_downsamples[self.patch_level]
            l0 = self.level0_size if self.level0_size is not None else self.patch_size * ds
            return self.patch_level, self.patch_size, self.tile_size, float(l0)
        # TRIDENT: read the level-0 square at the coarsest level not coarser than the target
        assert self.level0_size is not None
        want = self.level0_size / self.patch_size
        ok = [lv for lv, d in enumerate(level_downsamples) if d <= want * 1.01]
        level = max(ok, key=lambda lv: level_downsamples[lv]) if ok else 0
        read = max(1, int(round(self.level0_size / level_downsamples[level])))
        return level, read, self.tile_size, float(self.level0_size)


def read_coords(path: str | os.PathLike[str]) -> CoordsInfo:
    """Read a coordinates file written by us, CLAM or TRIDENT. One-line `UserError` if it is none of them."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise UserError(f"coords file not found: {p}")
    try:
        with h5py.File(p, "r") as f:
            if "coords" not in f:
                raise UserError(f"{p}: no 'coords' dataset (not a CLAM/TRIDENT/domainfm coordinates file)")
            coords = np.asarray(f["coords"][()]).astype(np.int64).reshape(-1, 2)
            root = {k: plain_attr(v) for k, v in f.attrs.items()}
            dset = {k: plain_attr(v) for k, v in f["coords"].attrs.items()}
    except OSError as exc:
        raise UserError(f"{p}: not a readable HDF5 file ({exc})") from None
    a = {**root, **dset}
    slide_path = str(a["slide_path"]) if a.get("slide_path") else None
    if "patch_level" in dset and "patch_size" in dset:  # ours (v2) or CLAM
        ps, lv = int(dset["patch_size"]), int(dset["patch_level"])
        if "patch_size_level0" in dset:
            l0: float | None = float(dset["patch_size_level0"])
        elif "downsample" in dset:
            l0 = ps * float(np.ravel(dset["downsample"])[0])
        else:
            l0 = None
        flavour = "domainfm" if "format_version" in root else "clam"
        custom = int(a.get("custom_downsample", 1) or 1)  # CLAM/TRIDENT legacy: extra downsizing
        tile = int(root.get("tile_size", ps // custom))
        return CoordsInfo(coords, a, flavour, lv, ps, l0, tile, slide_path)
    if "patch_size" in dset and ("patch_size_level0" in dset or
                                 ("level0_magnification" in dset and "target_magnification" in dset)):
        ps = int(dset["patch_size"])
        if "patch_size_level0" in dset:
            l0 = float(dset["patch_size_level0"])
        else:
            l0 = ps * float(dset["level0_magnification"]) / float(dset["target_magnification"])
        return CoordsInfo(coords, a, "trident", None, ps, l0, ps, slide_path)
    if "level" in root and "read_size" in root:  # our format 1 (attributes on the file root)
        return CoordsInfo(coords, a, "domainfm-v1", int(root["level"]), int(root["read_size"]),
                          float(root["level0_tile_size"]), int(root["tile_size"]), slide_path)
    raise UserError(f"{p}: the coords dataset has no patch_size/patch_level (CLAM) nor patch_size/"
                    "patch_size_level0 (TRIDENT) attributes")


def coords_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Root + coords-dataset attributes of a coordinates or feature file, plus the derived
    ``level0_tile_size`` (tile width in level-0 px) whichever tool wrote the file."""
    info = read_coords(path)
    out = dict(info.attrs)
    if info.level0_size is not None:
        out["level0_tile_size"] = info.level0_size
    return out
