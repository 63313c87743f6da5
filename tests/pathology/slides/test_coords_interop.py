"""Coordinates files readable by CLAM's and TRIDENT's loaders, and theirs readable by ours (real slide).

The published readers, written out here as data (what each tool's code does with the file):
* CLAM ``Whole_Slide_Bag_FP``: ``patch_level = f['coords'].attrs['patch_level']``,
  ``patch_size = f['coords'].attrs['patch_size']``, tile = ``wsi.read_region(coord, patch_level,
  (patch_size, patch_size))``.
* TRIDENT ``read_coords`` + ``OpenSlideWSIPatcher``: ``attrs = dict(f['coords'].attrs)``; needs
  ``patch_size``, ``level0_magnification``, ``target_magnification``; reads the level-0 square of
  ``round(patch_size * level0_magnification / target_magnification)`` px resized to ``patch_size``.
The writers: CLAM's ``process_contour`` attributes and TRIDENT's ``coords_to_h5`` attributes.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest

from domainfm.pathology.slides import TileConfig, read_tiles, tile_slide
from domainfm.pathology.slides.coords import read_coords

SLIDES = Path(os.environ.get("DOMAINFM_DATA", "/nonexistent")) / "pathology" / "slides"
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"  # 2 levels, downsample 2.0005, no mpp in the metadata
needs_data = pytest.mark.skipif(not TCGA.is_file(), reason="needs $DOMAINFM_DATA/pathology/slides")


def _clam_read(osr: openslide.OpenSlide, h5: Path, i: int) -> np.ndarray:
    with h5py.File(h5, "r") as f:
        patch_level = int(f["coords"].attrs["patch_level"])
        patch_size = int(f["coords"].attrs["patch_size"])
        coord = f["coords"][i]
    return np.asarray(osr.read_region(tuple(int(v) for v in coord), patch_level,
                                      (patch_size, patch_size)).convert("RGB"))


def _trident_footprint(h5: Path) -> int:
    with h5py.File(h5, "r") as f:
        a = dict(f["coords"].attrs)
    for need in ("patch_size", "level0_magnification", "target_magnification"):
        assert need in a, need  # else TRIDENT falls back to its legacy reader
    return round(a["patch_size"] * a["level0_magnification"] / a["target_magnification"])


@needs_data
def test_our_coords_read_by_clam_and_trident(tmp_path: Path) -> None:
    cfg = TileConfig(target_mpp=0.5, tile_size=224, slide_mpp=0.25, min_tissue=0.3)
    tile_slide(TCGA, tmp_path, cfg)
    h5 = tmp_path / "coords" / "TCGA-CR-7395-01A-01-TS1.h5"
    with h5py.File(h5, "r") as f:
        a = dict(f["coords"].attrs)
        n = len(f["coords"])
        assert "patch_level" not in f.attrs and "patch_size" not in f.attrs  # on the dataset, not the root
    assert n > 5 and a["patch_level"] == 1 and a["patch_size"] == 224 and a["patch_size_level0"] == 448
    assert tuple(a["level_dim"]) == (2221, 1783) and a["level0_width"] == 4443 and a["overlap"] == 0
    # TRIDENT reads the same level-0 square as CLAM's patch_size at patch_level
    assert _trident_footprint(h5) == a["patch_size_level0"] == round(a["patch_size"] * a["downsample"][0])
    # CLAM's tile == ours (read at the same level, same size: tile_size == patch_size here)
    ours = next(read_tiles(h5, batch_size=3))[1]
    with openslide.OpenSlide(str(TCGA)) as osr:
        for i in range(3):
            diff = np.abs(np.asarray(ours[i], np.int16) - _clam_read(osr, h5, i).astype(np.int16))
            assert diff.mean() < 2.0


@needs_data
def test_clam_and_trident_coords_read_by_us(tmp_path: Path) -> None:
    coords = np.array([[1024, 1024], [1536, 1024], [2048, 1536]], dtype=np.int64)
    clam = tmp_path / "clam.h5"  # CLAM process_contour: patch_size 256 at patch_level 1
    with h5py.File(clam, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_size": 256, "patch_level": 1, "downsample": (2.0005055, 2.0005047),
                        "downsampled_level_dim": (2221, 1783), "level_dim": (2221, 1783),
                        "name": "TCGA-CR-7395-01A-01-TS1", "save_path": "/clam/patches"})
    trident = tmp_path / "trident_patches.h5"  # TRIDENT coords_to_h5: 224 px at 20x from a 40x level 0
    with h5py.File(trident, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_size": 224, "patch_size_level0": 448, "level0_magnification": 40,
                        "target_magnification": 20, "overlap": 0, "name": "TCGA-CR-7395-01A-01-TS1",
                        "savetodir": "/trident/job", "level0_width": 4443, "level0_height": 3567})
    ci, ti = read_coords(clam), read_coords(trident)
    assert (ci.flavour, ci.patch_level, ci.patch_size, ci.tile_size) == ("clam", 1, 256, 256)
    assert ci.level0_size == pytest.approx(512.13, abs=0.01)
    assert (ti.flavour, ti.patch_level, ti.patch_size, ti.level0_size) == ("trident", None, 224, 448.0)
    with openslide.OpenSlide(str(TCGA)) as osr:
        c_tiles = next(read_tiles(clam, slide_path=TCGA, batch_size=8))
        assert np.array_equal(c_tiles[0], coords) and c_tiles[1][0].size == (256, 256)
        for i, c in enumerate(coords):
            ref = np.asarray(osr.read_region(tuple(int(v) for v in c), 1, (256, 256)).convert("RGB"), np.int16)
            assert np.abs(np.asarray(c_tiles[1][i], np.int16) - ref).mean() < 2.0
        t_tiles = next(read_tiles(trident, slide_path=TCGA, batch_size=8))[1]
        assert t_tiles[0].size == (224, 224)  # level 1 (downsample 2.0005 ~ 448/224), 224 px
        for i, c in enumerate(coords):
            ref = np.asarray(osr.read_region(tuple(int(v) for v in c), 1, (224, 224)).convert("RGB"), np.int16)
            assert np.abs(np.asarray(t_tiles[i], np.int16) - ref).mean() < 2.0
    with pytest.raises(Exception, match="does not record its slide"):
        next(read_tiles(clam))
