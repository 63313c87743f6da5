"""Tiling geometry: level choice, coordinates at the right µm/px, tissue selection, exact re-reads."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from slides_synth import make_base, write_pyramid

from domainfm.core.errors import UserError
from domainfm.pathology.slides import MissingMppError, TileConfig, open_slide, read_tiles, tile_slide
from domainfm.pathology.slides.tiling import choose_level, plan_tiles

# the synthetic slide is tiny (144 x 128 µm), so the tissue-size settings are scaled down with it
SMALL = {"min_area_um2": 100.0, "max_hole_area_um2": 100.0, "close_um": 2.0, "open_um": 2.0}


def cfg(**kw) -> TileConfig:
    return TileConfig(**{"tile_size": 32, "min_tissue": 0.75, **SMALL, **kw})


def test_choose_level() -> None:
    ds = [1.0, 4.0, 16.0]
    assert choose_level(0.25, ds, 0.5) == (0, False)
    assert choose_level(0.25, ds, 1.0) == (1, False)
    assert choose_level(0.25, ds, 3.9) == (1, False)
    assert choose_level(0.25, ds, 4.0) == (2, False)
    assert choose_level(0.499, [1.0], 0.5) == (0, False)
    assert choose_level(0.505, [1.0], 0.5) == (0, False)  # within 2 % of the target: no upsampling
    with pytest.raises(UserError, match="--allow-upsample"):
        choose_level(1.0, ds, 0.5)
    assert choose_level(1.0, ds, 0.5, allow_upsample=True) == (0, True)


def test_coords_at_target_mpp(synth_slide, tmp_path: Path) -> None:
    """0.25 µm/px slide tiled at 0.5 µm/px, 32 px: read at level 1, level-0 tile size 64."""
    path, levels = synth_slide
    res = tile_slide(path, tmp_path / "out", cfg(target_mpp=0.5))
    assert res["status"] == "ok" and res["level"] == 1
    with h5py.File(tmp_path / "out" / "coords" / "synth.h5") as f:
        coords = f["coords"][:]
        a = dict(f.attrs)  # our own facts on the root
        d = dict(f["coords"].attrs)  # CLAM's and TRIDENT's on the coords dataset
        assert f["coords"].dtype == np.int64 and coords.shape == (9, 2)
        assert (f["tissue_fraction"][:] >= 0.75).all()
    assert d["patch_level"] == 1 and d["patch_size"] == 32 and d["patch_size_level0"] == 64 and a["tile_size"] == 32
    assert a["slide_mpp"] == pytest.approx(0.25) and a["target_mpp"] == 0.5 and a["level_mpp"] == pytest.approx(0.5)
    assert d["name"] == "synth" and Path(a["slide_path"]).name == "synth.tiff"
    # no duplicates of the tools' names under our own names
    assert not {"level", "read_size", "level0_tile_size", "slide_id", "level_downsample"} & (set(a) | set(d))
    # the tissue block spans level-0 x in [160, 416), y in [96, 352): exactly the 3 x 3 fully inside tiles
    want = {(x, y) for y in (128, 192, 256) for x in (192, 256, 320)}
    assert {tuple(c) for c in coords.tolist()} == want
    assert coords.tolist() == sorted(coords.tolist(), key=lambda c: (c[1], c[0]))  # row-major order
    for sub in ("thumbnails/synth.png", "grids/synth.png", "masks/synth.png", "masks/synth_overlay.png",
                "geojson/synth.geojson"):
        assert (tmp_path / "out" / sub).is_file(), sub
    thumb = Image.open(tmp_path / "out" / "thumbnails" / "synth.png")
    assert thumb.width * a["thumb_downsample"] == pytest.approx(576)


@pytest.mark.parametrize("target,level,read_size,l0", [(1.0, 2, 32, 128), (0.3, 0, 38, 38), (0.6, 1, 38, 76)])
def test_levels_and_sizes(synth_slide, target, level, read_size, l0) -> None:
    path, _ = synth_slide
    with open_slide(path) as s:
        plan = plan_tiles(s, cfg(target_mpp=target, min_tissue=0.0))
    assert (plan.level, plan.read_size, plan.level0_tile_size) == (level, read_size, l0)
    stride0 = read_size * 2**level
    assert (plan.coords % stride0 == 0).all()
    assert plan.n_grid == len(plan.coords)  # min_tissue 0 keeps the whole grid
    assert (plan.coords + l0 <= np.array([576, 512]) + 2**level).all()


def test_reread_matches_the_expected_region(synth_slide, tmp_path: Path) -> None:
    path, levels = synth_slide
    out = tmp_path / "out"
    tile_slide(path, out, cfg(target_mpp=0.5, save_tiles=True, tile_format="png"))
    seen = 0
    for coords, imgs in read_tiles(out / "coords" / "synth.h5", batch_size=4):
        assert len(coords) == len(imgs) <= 4
        for (x, y), img in zip(coords, imgs, strict=True):
            want = levels[1][y // 2:y // 2 + 32, x // 2:x // 2 + 32]
            np.testing.assert_array_equal(np.asarray(img), want)
            np.testing.assert_array_equal(np.asarray(Image.open(out / "tiles" / "synth" / f"{x}_{y}.png")), want)
            seen += 1
    assert seen == 9 and len(list((out / "tiles" / "synth").iterdir())) == 9


def test_reread_with_resize(synth_slide, tmp_path: Path) -> None:
    """Target 0.6 µm/px: 38 px read at level 1 (0.5 µm/px) and resized to 32 px."""
    path, levels = synth_slide
    tile_slide(path, tmp_path, cfg(target_mpp=0.6, min_tissue=0.5))
    coords, imgs = next(read_tiles(tmp_path / "coords" / "synth.h5", slide_path=path, batch_size=100))
    assert len(coords) > 0
    for (x, y), img in zip(coords, imgs, strict=True):
        crop = levels[1][y // 2:y // 2 + 38, x // 2:x // 2 + 38]
        want = np.asarray(Image.fromarray(crop).resize((32, 32), Image.Resampling.BILINEAR))
        assert img.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(img), want)


def test_missing_mpp_fails_with_one_line(tmp_path: Path) -> None:
    p = tmp_path / "nompp.tiff"
    write_pyramid(p, make_base(), n_levels=2, mpp=None)
    with pytest.raises(MissingMppError) as e:
        tile_slide(p, tmp_path / "out", cfg())
    assert "--slide-mpp" in str(e.value) and "\n" not in str(e.value)
    res = tile_slide(p, tmp_path / "out", cfg(slide_mpp=0.25))
    assert res["status"] == "ok" and res["n_tiles"] == 9 and res["mpp_source"] == "--slide-mpp"


def test_overlap_and_plain_image(tmp_path: Path) -> None:
    p = tmp_path / "plain.png"
    Image.fromarray(make_base()).save(p, dpi=(25400 / 0.5, 25400 / 0.5))  # 0.5 µm/px
    res = tile_slide(p, tmp_path / "o", cfg(target_mpp=0.5, overlap=0.5))
    with h5py.File(tmp_path / "o" / "coords" / "plain.h5") as f:
        c = f["coords"][:]
        assert f.attrs["stride"] == 16 and f.attrs["level0_stride"] == 16 and f.attrs["backend"] == "pillow"
    assert res["n_tiles"] == len(c) > 9
    assert set(np.diff(np.unique(c[:, 0]))) == {16}
