"""Fixtures of the slides tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slides_synth import make_base, write_pyramid


@pytest.fixture
def synth_slide(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    p = tmp_path / "synth.tiff"
    return p, write_pyramid(p, make_base())
