"""pathology.slides: whole-slide readers, tissue detection, tiling at a target µm/px, tile re-reading.

Public API (imported lazily so `import domainfm.pathology.slides` stays light):
  open_slide(path, mpp=None, backend="auto") -> Slide
  TileConfig, tile_slide(slide_path, out_dir, cfg, mpp=None) -> dict
  tile_slides(inputs, out_dir, cfg, slide_mpp=None, workers=1) -> list[dict]   (many slides + summary.csv)
  read_tiles(coords_h5, slide_path=None, batch_size=64) -> Iterator[(coords (b, 2), [PIL.Image])]
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "open_slide": "readers", "Slide": "readers", "SlideReadError": "readers", "find_slides": "readers",
    "slide_id_of": "readers",
    "TileConfig": "tiling", "tile_slide": "tiling", "read_tiles": "tiling", "plan_tiles": "tiling",
    "MissingMppError": "tiling",
    "tile_slides": "batch",
    "tissue_mask": "tissue", "TissueParams": "tissue",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
