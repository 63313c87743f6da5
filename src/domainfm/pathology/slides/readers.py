"""Whole-slide readers behind one small interface: OpenSlide, tiffslide (fallback) and Pillow.

`open_slide(path)` tries the backends in order (OpenSlide for SVS/NDPI/MRXS/tiled TIFF/..., tiffslide
for TIFFs OpenSlide rejects, Pillow for plain PNG/JPEG/TIFF images) and returns a `Slide` whose
`read_region(loc, level, size)` follows the OpenSlide convention: `loc` is the top-left corner in
level-0 pixels, `size` is (width, height) in pixels of `level`; the result is an RGB PIL image with
transparent (unscanned) pixels made white.

The slide's resolution (`mpp`, micrometres per level-0 pixel) comes from its metadata: OpenSlide's
`openslide.mpp-x` (Aperio `MPP`, Hamamatsu, ...), the Aperio `aperio.MPP` key, TIFF resolution tags,
or the DPI of a plain image. A value outside the range of a microscope (`MPP_RANGE`: a 72/300/600-dpi
image-editor default is 353/84.7/42.3 µm/px, not a slide resolution) is not trusted; it is noted in
`mpp_rejected`. Without a trusted value the objective power (`openslide.objective-power`,
`aperio.AppMag`) gives `10 / power` µm/px (the 40x = 0.25, 20x = 0.5 µm/px convention). `mpp=`
overrides all of it; when nothing gives a resolution `mpp` is None and tiling uses the user's default or
fails with a one-line reason (see `tiling.resolve_mpp`). `mpp_source` records where the value came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from domainfm.core.errors import UserError

# extensions scanned in folders; OpenSlide formats + TIFF + plain images
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff",
                    ".dcm", ".png", ".jpg", ".jpeg")
PLAIN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# plausible µm/px of a slide scanner / microscope camera (100x oil ~0.05, 1.25x ~8): anything outside is a
# software default (72/300/600 dpi = 353/84.7/42.3 µm/px) or garbage and is not trusted
MPP_RANGE = (0.05, 20.0)
OBJECTIVE_KEYS = ("openslide.objective-power", "aperio.AppMag", "tiffslide.objective-power")
MPP_PER_POWER = 10.0  # µm/px x objective power: 40x -> 0.25, 20x -> 0.5 (the scanners' convention)
BACKENDS = ("auto", "openslide", "tiffslide", "pillow")
Image.MAX_IMAGE_PIXELS = None  # slides are big on purpose; the size check is ours (`max_pixels`)


class SlideReadError(UserError):
    """A slide that cannot be opened or read (corrupt, unsupported): one line naming the reasons."""


def slide_id_of(path: str | os.PathLike[str]) -> str:
    """The slide id is the file name without its extension(s) (`x.ome.tiff` -> `x`)."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not np.isfinite(mpp) or not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        return None
    return float(mpp)


def _implausible_note(key: str, raw: Any) -> str:
    return f"{key}={raw} µm/px outside {MPP_RANGE[0]}-{MPP_RANGE[1]}"


def objective_power(props: dict[str, Any]) -> tuple[float | None, str]:
    """Objective power (e.g. 20.0) and its key from slide properties, or (None, "")."""
    for key in OBJECTIVE_KEYS:
        try:
            power = float(props[key])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(power) and 1.0 <= power <= 150.0:
            return power, key
    return None, ""


def mpp_from_properties(props: dict[str, Any], rejected: list[str] | None = None) -> tuple[float | None, str]:
    """Resolution (µm/px) and its source from OpenSlide/tiffslide properties, or (None, "").

    Order: `openslide.mpp-x` / `tiffslide.mpp-x` / `aperio.MPP`, TIFF resolution tags, then the objective
    power. Values outside `MPP_RANGE` are skipped and described in `rejected` (when given)."""
    rejected = rejected if rejected is not None else []
    for key in ("openslide.mpp-x", "tiffslide.mpp-x", "aperio.MPP"):
        try:
            raw = float(props[key])
        except (KeyError, TypeError, ValueError):
            continue
        mpp = _plausible(raw)
        if mpp is not None:
            return mpp, key
        rejected.append(_implausible_note(key, round(raw, 4)))
    # TIFF resolution tags (what tifffile writes with `resolution=` + `resolutionunit=`)
    scale = {"centimeter": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0, "millimeter": 1e3,
             "micrometer": 1.0}
    unit = str(props.get("tiff.ResolutionUnit", "")).lower().replace("resunit.", "")
    try:
        xres = float(props["tiff.XResolution"])
        raw = scale[unit] / xres if xres > 0 else None
    except (KeyError, TypeError, ValueError):
        raw = None
    if raw is not None:
        mpp = _plausible(raw)
        if mpp is not None:
            return mpp, "tiff.XResolution"
        rejected.append(_implausible_note("tiff.XResolution", round(raw, 4)))
    power, key = objective_power(props)
    if power is not None:
        return MPP_PER_POWER / power, f"objective power ({key}={power:g})"
    return None, ""


class Slide:
    """One opened slide. Attributes follow OpenSlide: `dimensions` (W, H) of level 0,
    `level_dimensions`, `level_downsamples`, plus `mpp` (µm per level-0 px or None), `mpp_source`,
    `backend`, `path`, `slide_id`, `properties`. Use as a context manager or call `close()`."""

    backend = "base"

    def __init__(self, path: Path, level_dimensions: list[tuple[int, int]], level_downsamples: list[float],
                 properties: dict[str, Any], mpp: float | None, mpp_source: str,
                 mpp_rejected: list[str] | None = None) -> None:
        self.path = path
        self.slide_id = slide_id_of(path)
        self.level_dimensions = level_dimensions
        self.level_downsamples = level_downsamples
        self.properties = properties
        self.mpp = mpp
        self.mpp_source = mpp_source
        self.mpp_rejected = list(mpp_rejected or [])  # metadata values not trusted, with the reason

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    # --- reading -----------------------------------------------------------------------------
    def read_region(self, loc: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGB region of `size` (level px) at level `level` whose top-left is `loc` (level-0 px)."""
        return Image.fromarray(self.read_region_array(loc, level, size))

    def read_region_array(self, loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Same as `read_region` as an (H, W, 3) uint8 array (no PIL round trip)."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range (slide has {self.level_count})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        return _to_rgb(self._read(int(loc[0]), int(loc[1]), level, w, h))

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def associated_thumbnail(self) -> Image.Image | None:
        """The scanner's stored overview of the whole level-0 field (`thumbnail`), if any."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({self.slide_id!r}, backend={self.backend}, dims={self.dimensions}, "
                f"levels={self.level_count}, mpp={self.mpp})")


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (H, W, 3): RGBA composited on white; grayscale broadcast."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    c = arr.shape[2]
    if c == 4:
        alpha = arr[..., 3:4]
        rgb = arr[..., :3]
        if alpha.min() < 255:  # outside the scanned area (alpha 0) becomes white background
            a = alpha.astype(np.uint16)
            rgb = ((rgb.astype(np.uint16) * a + 255 * (255 - a)) // 255).astype(np.uint8)
        return np.ascontiguousarray(rgb)
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


class OpenSlideSlide(Slide):
    backend = "openslide"

    def __init__(self, path: Path, osr: Any) -> None:
        props = dict(osr.properties)
        rejected: list[str] = []
        mpp, src = mpp_from_properties(props, rejected)
        super().__init__(path, [tuple(map(int, d)) for d in osr.level_dimensions],
                         [float(d) for d in osr.level_downsamples], props, mpp, src, rejected)
        self._osr = osr

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._osr.read_region((x, y), level, (w, h)))

    def associated_thumbnail(self) -> Image.Image | None:
        try:
            return self._osr.associated_images["thumbnail"].convert("RGB")
        except KeyError:
            return None

    def close(self) -> None:
        self._osr.close()


class TiffSlideSlide(Slide):
    backend = "tiffslide"

    def __init__(self, path: Path, ts: Any) -> None:
        props = {k: v for k, v in ts.properties.items() if v is not None}
        rejected: list[str] = []
        mpp, src = mpp_from_properties(props, rejected)
        super().__init__(path, [tuple(map(int, d)) for d in ts.level_dimensions],
                         [float(d) for d in ts.level_downsamples], props, mpp, src, rejected)
        self._ts = ts

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        arr = self._ts.read_region((x, y), level, (w, h), as_array=True)
        # tiffslide pads outside the image with black; make it white like OpenSlide's background
        ds = self._ts.level_downsamples[level]
        lx, ly = int(x / ds), int(y / ds)  # tiffslide's own level-coordinate rule
        lw, lh = self.level_dimensions[level]
        if lx < 0 or ly < 0 or lx + w > lw or ly + h > lh:
            arr = np.array(arr)
            xs, ys = np.arange(lx, lx + w), np.arange(ly, ly + h)
            arr[(ys < 0) | (ys >= lh)] = 255
            arr[:, (xs < 0) | (xs >= lw)] = 255
        return arr

    def associated_thumbnail(self) -> Image.Image | None:
        try:
            return self._ts.associated_images["thumbnail"].convert("RGB")
        except (KeyError, Exception):  # noqa: BLE001 - a broken associated image is just absent
            return None

    def close(self) -> None:
        self._ts.close()


class PillowSlide(Slide):
    """A plain image (PNG/JPEG/TIFF) as a one-level slide, decoded once into memory."""

    backend = "pillow"

    def __init__(self, path: Path, img: Image.Image) -> None:
        dpi = img.info.get("dpi")  # Pillow converts TIFF/PNG/JPEG density to dots per inch
        mpp, src, rejected = None, "", []
        if dpi and float(dpi[0]) > 0:
            mpp = _plausible(25400.0 / float(dpi[0]))
            src = "image dpi" if mpp is not None else ""
            if mpp is None:
                rejected.append(_implausible_note(f"image dpi {float(dpi[0]):g}", round(25400.0 / float(dpi[0]), 4)))
        self._arr = _to_rgb(np.asarray(img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else
                                       img.convert("RGB")))
        h, w = self._arr.shape[:2]
        props = {"pillow.format": img.format or "", "pillow.mode": img.mode}
        super().__init__(path, [(w, h)], [1.0], props, mpp, src, rejected)

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        H, W = self._arr.shape[:2]
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._arr[y0:y1, x0:x1]
        return out


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg[:200]


def open_slide(path: str | os.PathLike[str], mpp: float | None = None, backend: str = "auto") -> Slide:
    """Open a slide with the first backend that reads it; `mpp` overrides the metadata resolution.

    Raises `SlideReadError` (one line, every backend's reason) when none can read it.
    """
    p = Path(path)
    if backend not in BACKENDS:
        raise UserError(f"unknown slide backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not p.exists():
        raise SlideReadError(f"slide not found: {p}")
    if p.is_dir():
        raise SlideReadError(f"{p} is a folder, not a slide file")
    order = ["openslide", "tiffslide", "pillow"] if backend == "auto" else [backend]
    if backend == "auto" and p.suffix.lower() in (".png", ".jpg", ".jpeg"):
        order = ["pillow"]  # OpenSlide would also take these, but Pillow keeps the DPI
    errors: list[str] = []
    for name in order:
        try:
            slide = _OPENERS[name](p)
        except Exception as exc:  # noqa: BLE001 - every backend's failure is reported, none is fatal
            errors.append(f"{name}: {_one_line(exc)}")
            continue
        if mpp is not None:
            slide.mpp, slide.mpp_source = float(mpp), "given"
        return slide
    raise SlideReadError(f"cannot read {p.name} ({'; '.join(errors)})")


def _open_openslide(p: Path) -> Slide:
    import openslide

    return OpenSlideSlide(p, openslide.OpenSlide(str(p)))


def _open_tiffslide(p: Path) -> Slide:
    if p.suffix.lower() not in (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif"):
        raise SlideReadError("not a TIFF-based format")
    import tiffslide

    ts = tiffslide.TiffSlide(str(p))
    try:
        slide = TiffSlideSlide(p, ts)
        slide.read_region_array((0, 0), slide.level_count - 1, (1, 1))  # fail now, not mid-tiling
    except Exception:
        ts.close()
        raise
    return slide


def _open_pillow(p: Path) -> Slide:
    if p.suffix.lower() not in PLAIN_EXTENSIONS:
        raise SlideReadError("not a plain image format")
    with Image.open(p) as img:
        img.load()
        return PillowSlide(p, img)


_OPENERS = {"openslide": _open_openslide, "tiffslide": _open_tiffslide, "pillow": _open_pillow}


def find_slides(inputs: list[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, by extension) into a sorted, de-duplicated list."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SLIDE_EXTENSIONS
                                and not f.name.startswith(".")))
        elif p.exists():
            found.append(p)
        else:
            raise UserError(f"no such slide or folder: {p}")
    seen: set[Path] = set()
    out = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
