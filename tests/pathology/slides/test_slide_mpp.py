"""µm/px as scanners (and image editors) write it: implausible values are not trusted, the objective power
is the fallback before the user's default, a per-slide value from the user always wins, the source is kept."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from slides_synth import make_base

from domainfm.pathology.slides import TileConfig, open_slide, tile_slide
from domainfm.pathology.slides.tiling import MissingMppError


def _tiff(path: Path, dpi: float, description: str | None = None) -> Path:
    """One-level tiled TIFF at `dpi` (a 300/600-dpi image-editor default), optionally Aperio-described."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        tw.write(make_base(), photometric="rgb", tile=(64, 64), resolution=(dpi, dpi), resolutionunit="INCH",
                 description=description, metadata=None)
    return path


# the ImageDescription layout of Aperio SVS files (CMU-1: "...|AppMag = 20|...|MPP = 0.4990|..."), without MPP
APERIO_NO_MPP = "Aperio Image Library v11.2.1 \r\n576x512 (64x64) RAW|AppMag = 20|StripeWidth = 2040|Filename = x"


def test_300_dpi_is_not_a_resolution_objective_power_is(tmp_path: Path) -> None:
    p = _tiff(tmp_path / "aperio.svs", 300, APERIO_NO_MPP)
    with open_slide(p) as s:
        assert s.properties.get("aperio.AppMag") == "20"
        assert s.mpp == pytest.approx(0.5) and s.mpp_source.startswith("objective power")
        assert any("84.6667" in r for r in s.mpp_rejected)
    res = tile_slide(p, tmp_path / "o", TileConfig(target_mpp=0.5, tile_size=32, slide_mpp=0.25))
    assert res["mpp_source"].startswith("objective power") and res["slide_mpp"] == pytest.approx(0.5)
    with h5py.File(tmp_path / "o" / "coords" / "aperio.h5") as f:
        assert f.attrs["mpp_source"].startswith("objective power") and f["coords"].attrs["patch_size"] == 32
    # an explicit per-slide value from the user wins over everything
    res = tile_slide(p, tmp_path / "o2", TileConfig(target_mpp=0.5, tile_size=32), mpp=0.25)
    assert res["mpp_source"] == "--slide-mpp csv" and res["slide_mpp"] == 0.25


def test_600_dpi_without_objective_uses_the_default_or_fails(tmp_path: Path) -> None:
    p = _tiff(tmp_path / "scan.tiff", 600)
    with open_slide(p) as s:
        assert s.mpp is None and any("42.3333" in r for r in s.mpp_rejected)
    with pytest.raises(MissingMppError) as e:
        tile_slide(p, tmp_path / "o", TileConfig(target_mpp=0.5, tile_size=32))
    assert "42.3333" in str(e.value) and "\n" not in str(e.value)
    res = tile_slide(p, tmp_path / "o", TileConfig(target_mpp=0.5, tile_size=32, slide_mpp=0.5))
    assert res["slide_mpp"] == 0.5 and res["mpp_source"].startswith("--slide-mpp (not trusted: ")
    # a plausible metadata value still beats the user's default
    q = tmp_path / "good.tiff"
    _tiff(q, 25400 / 0.25)
    res = tile_slide(q, tmp_path / "o3", TileConfig(target_mpp=0.5, tile_size=32, slide_mpp=1.0))
    assert res["slide_mpp"] == pytest.approx(0.25) and res["mpp_source"] in ("openslide.mpp-x", "tiff.XResolution")
    assert np.isfinite(res["slide_mpp"])
