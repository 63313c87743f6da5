"""Every SSL test decodes its tiles into a private cache folder (never the user's ~/.cache)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_tile_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.getbasetemp() / "tile-cache"
    monkeypatch.setenv("DOMAINFM_CACHE", str(root))
    return root
