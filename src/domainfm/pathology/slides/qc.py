"""Tile quality control (background, blur, pen marks, non-H&E stains) and Macenko stain normalisation.

Filters follow the datatrove convention of `domainfm.core.steps.Filter`: a record ``{"rgb": (H, W, 3)
uint8, ...}`` is kept (``True``) or dropped with a reason (``(False, "pen mark (green)")``), and the
base class counts both (the measurements stay in ``rec["qc"]``). `tile_qc` runs the chain on one tile and returns every measurement.

Measurements (scikit-image):
  tissue      fraction of pixels with HSV saturation > `tissue_saturation` (white glass / almost-white is not)
  blur        variance of the Laplacian of the grey image (``skimage.filters.laplace``): in-focus tissue
              has sharp nuclei edges; out-of-focus tiles have almost none
  pen         fraction of pixels in an ink colour: green/cyan (hue 70-200°, S > 0.25), blue (hue 200-250°,
              S > 0.45) or red (hue <= 15° or >= 345°, S > 0.55, V > 0.35). H&E is pink to purple
              (hue ~250-345°) and eosin is far less saturated than red ink
  eosin       fraction of tissue pixels in H&E's pink/purple hue range (hue >= 280° or <= 15°): IHC
              (DAB brown + haematoxylin blue) has almost none, so Macenko (an H&E model) is not applied

Thresholds are set on the labelled real tiles of ``$DOMAINFM_DATA/pathology/tiles`` (see
tests/pathology/slides/test_tile_qc.py, which checks every one of them).

`StainNormaliser` wraps torchstain's Macenko normaliser (numpy backend): fitted once on a reference H&E
tile, it maps each tile's stain vectors and concentrations onto the reference's. Tiles without enough
stained pixels (or non-H&E) are returned unchanged and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domainfm.core.steps import Filter, Record


@dataclass
class QCConfig:
    tissue_saturation: float = field(default=0.1, metadata={"help": "HSV saturation above which a pixel is tissue"})
    min_tissue: float = field(default=0.1, metadata={"help": "tiles with less tissue are background"})
    blur_threshold: float = field(default=5e-4, metadata={"help": "Laplacian variance below this is blurry"})
    pen_fraction: float = field(default=0.02, metadata={"help": "ink-coloured fraction that marks a pen mark"})
    min_eosin: float = field(default=0.1, metadata={"help": "pink/purple share of tissue below which not H&E"})


def measure(rgb: np.ndarray, cfg: QCConfig | None = None) -> dict[str, float]:
    """(H, W, 3) uint8 -> {tissue, blur, pen_green, pen_blue, pen_red, eosin}."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.filters import laplace

    cfg = cfg or QCConfig()
    a = np.ascontiguousarray(rgb[..., :3])
    hsv = rgb2hsv(a)
    h, s, v = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    tissue = s > cfg.tissue_saturation
    green = (h >= 70) & (h <= 200) & (s > 0.25) & (v > 0.15)
    blue = (h > 200) & (h <= 250) & (s > 0.45) & (v > 0.15)
    red = ((h >= 345) | (h <= 15)) & (s > 0.55) & (v > 0.35)
    pink = ((h >= 280) | (h <= 15)) & tissue
    n_t = int(tissue.sum())
    return {"tissue": float(tissue.mean()), "blur": float(laplace(rgb2gray(a)).var()),
            "pen_green": float(green.mean()), "pen_blue": float(blue.mean()), "pen_red": float(red.mean()),
            "eosin": float(pink.sum() / n_t) if n_t else 0.0}


class _QCFilter(Filter):
    def __init__(self, cfg: QCConfig | None = None) -> None:
        self.cfg = cfg or QCConfig()

    def _m(self, rec: Record) -> dict[str, float]:
        if "qc" not in rec:
            rec["qc"] = measure(rec["rgb"], self.cfg)
        return rec["qc"]


class BackgroundFilter(_QCFilter):
    name = "background"

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        t = self._m(rec)["tissue"]
        return True if t >= self.cfg.min_tissue else (False, "background")


class PenMarkFilter(_QCFilter):
    name = "pen"

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        m = self._m(rec)
        colour, frac = max(((c, m[f"pen_{c}"]) for c in ("green", "blue", "red")), key=lambda t: t[1])
        return True if frac < self.cfg.pen_fraction else (False, f"pen mark ({colour})")


class BlurFilter(_QCFilter):
    name = "blur"

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        b = self._m(rec)["blur"]
        return True if b >= self.cfg.blur_threshold else (False, "blurry")


QC_FILTERS = (BackgroundFilter, PenMarkFilter, BlurFilter)  # background first: an empty tile is not "blurry"


def tile_qc(rgb: np.ndarray, cfg: QCConfig | None = None) -> tuple[bool, str, dict[str, float]]:
    """(keep, reason, measurements) for one tile: the first filter that drops it gives the reason."""
    rec: Record = {"rgb": rgb}
    for cls in QC_FILTERS:
        verdict = cls(cfg).filter(rec)
        if verdict is not True:
            return False, verdict[1], rec["qc"]
    return True, "", rec["qc"]


def he_like(m: dict[str, float], cfg: QCConfig | None = None) -> bool:
    """From `measure`'s output: enough stained tissue, and enough of it pink/purple (H&E, not IHC)."""
    cfg = cfg or QCConfig()
    return m["tissue"] >= cfg.min_tissue and m["eosin"] >= cfg.min_eosin


def is_he(rgb: np.ndarray, cfg: QCConfig | None = None) -> bool:
    """Whether the stained pixels look like H&E (pink/purple), not IHC (brown/blue) or pen ink."""
    return he_like(measure(rgb, cfg), cfg)


class StainNormaliser:
    """Macenko normalisation to a reference H&E tile (torchstain, numpy backend). Call on a PIL image or an
    (H, W, 3) uint8 array; returns the same type. `counts` says how many tiles were normalised / skipped."""

    def __init__(self, reference_rgb: np.ndarray, cfg: QCConfig | None = None) -> None:
        from torchstain.base.normalizers import MacenkoNormalizer

        self.cfg = cfg or QCConfig()
        self._norm = MacenkoNormalizer(backend="numpy")
        ref = np.ascontiguousarray(np.asarray(reference_rgb)[..., :3])
        if not is_he(ref, self.cfg):
            from domainfm.core.errors import UserError

            raise UserError("the stain reference tile is not H&E tissue (too little pink/purple stained tissue)")
        self._norm.fit(ref)
        self.counts = {"normalised": 0, "skipped_not_he": 0, "skipped_failed": 0}

    def __call__(self, img: Any) -> Any:
        from PIL import Image

        pil = isinstance(img, Image.Image)
        arr = np.asarray(img.convert("RGB")) if pil else np.asarray(img)[..., :3]
        if not is_he(arr, self.cfg):
            self.counts["skipped_not_he"] += 1
            return img
        try:
            out, _, _ = self._norm.normalize(I=np.ascontiguousarray(arr), stains=False)
        except (np.linalg.LinAlgError, ValueError, IndexError):  # too few stained pixels for the fit
            self.counts["skipped_failed"] += 1
            return img
        self.counts["normalised"] += 1
        return Image.fromarray(out) if pil else out
