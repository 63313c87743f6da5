"""Readers: OpenSlide / tiffslide / Pillow backends, metadata resolution, bad files, real slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domainfm.pathology.slides import SlideReadError, find_slides, open_slide, slide_id_of


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_pyramid_levels_mpp_and_pixels(synth_slide, backend: str) -> None:
    path, levels = synth_slide
    with open_slide(path, backend=backend) as s:
        assert s.backend == backend
        assert s.dimensions == (576, 512)
        assert s.level_dimensions == [(576, 512), (288, 256), (144, 128)]
        assert s.level_downsamples == pytest.approx([1, 2, 4])
        assert s.mpp == pytest.approx(0.25)
        # loc in level-0 px, size in level px (OpenSlide convention)
        got = np.asarray(s.read_region((128, 64), 1, (40, 30)))
        np.testing.assert_array_equal(got, levels[1][32:62, 64:104])
        got2 = s.read_region_array((256, 256), 2, (16, 8))
        np.testing.assert_array_equal(got2, levels[2][64:72, 64:80])


def test_auto_prefers_openslide_and_override_mpp(synth_slide) -> None:
    path, _ = synth_slide
    with open_slide(path, mpp=0.123) as s:
        assert s.backend == "openslide"
        assert s.mpp == 0.123 and s.mpp_source == "given"


def test_out_of_bounds_is_white(synth_slide) -> None:
    path, levels = synth_slide
    for backend in ("openslide", "tiffslide"):
        with open_slide(path, backend=backend) as s:
            arr = s.read_region_array((560, 500), 0, (32, 32))
            np.testing.assert_array_equal(arr[:12, :16], levels[0][500:512, 560:576])
            assert (arr[12:] == 255).all() and (arr[:, 16:] == 255).all()


def test_plain_images_and_dpi(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p, dpi=(50800, 50800))  # 0.5 µm/px
    with open_slide(p) as s:
        assert s.backend == "pillow" and s.dimensions == (50, 40) and s.level_count == 1
        assert s.mpp == pytest.approx(0.5, rel=1e-3)
        np.testing.assert_array_equal(s.read_region_array((10, 5), 0, (8, 6)), rgb[5:11, 10:18])
        out = s.read_region_array((45, 35), 0, (10, 10))  # off the edge -> white
        assert (out[5:] == 255).all() and (out[:, 5:] == 255).all()
    q = tmp_path / "b.png"
    Image.fromarray(rgb).save(q, dpi=(72, 72))  # screen DPI is not a slide resolution
    with open_slide(q) as s:
        assert s.mpp is None
    # a stripped (not tiled) TIFF with resolution tags: opened by a fallback backend, mpp from the tags
    import tifffile

    t = tmp_path / "c.tif"
    tifffile.imwrite(t, rgb, photometric="rgb", resolution=(1e4 / 0.3, 1e4 / 0.3), resolutionunit="CENTIMETER")
    with open_slide(t) as s:
        assert s.mpp == pytest.approx(0.3, rel=1e-3)
        np.testing.assert_array_equal(s.read_region_array((0, 0), 0, (50, 40)), rgb)


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"IJrE" + bytes(range(256)) * 3)
    with pytest.raises(SlideReadError) as e:
        open_slide(bad)
    msg = str(e.value)
    assert "broken.svs" in msg and "openslide" in msg and "tiffslide" in msg and "\n" not in msg
    with pytest.raises(SlideReadError, match="not found"):
        open_slide(tmp_path / "nope.svs")


def test_find_slides_and_ids(tmp_path: Path, synth_slide) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.ome.tiff").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    found = find_slides([tmp_path])
    assert [p.name for p in found] == ["x.ome.tiff", "synth.tiff"] or sorted(p.name for p in found) == [
        "synth.tiff", "x.ome.tiff"]
    assert slide_id_of("a/b/x.ome.tiff") == "x" and slide_id_of("TCGA-1.svs") == "TCGA-1"


def test_real_slides(data_dir: Path) -> None:
    sdir = data_dir / "pathology" / "slides"
    with open_slide(sdir / "CMU-1-Small-Region.svs") as s:
        assert s.backend == "openslide" and s.dimensions == (2220, 2967) and s.level_count == 1
        assert s.mpp == pytest.approx(0.499, abs=1e-3)
        assert s.associated_thumbnail() is not None
        tile = s.read_region((1000, 1000), 0, (64, 64))
        assert tile.mode == "RGB" and tile.size == (64, 64)
    with open_slide(sdir / "TCGA-CR-7395-01A-01-TS1.svs") as s:  # JPEG 2000, no resolution metadata
        assert s.level_dimensions == [(4443, 3567), (2221, 1783)]
        assert s.mpp is None
        arr = s.read_region_array((2000, 1500), 1, (32, 32))
        assert arr.shape == (32, 32, 3) and arr.std() > 0
    with pytest.raises(SlideReadError, match="cannot read broken.svs"):
        open_slide(sdir / "corrupt" / "broken.svs")
