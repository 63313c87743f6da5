"""Tissue detection on a low-resolution overview, its contours, and the tissue fraction of tiles.

Pipeline (CLAM's segmentation, without OpenCV): saturation of HSV -> light Gaussian smoothing ->
threshold (Otsu from scikit-image, floored at `min_saturation` so a blank slide does not turn noise into
tissue, or a fixed threshold) -> closing then opening (square of side 2r+1, r in µm) -> drop objects
smaller than `min_area_um2` -> fill holes smaller than `max_hole_area_um2` (larger holes, e.g. lumens, stay
holes); both with scikit-image's `remove_small_objects`.

Contours are traced per connected component (outer ring + its holes) with marching squares, made valid
with shapely (marching-squares rings of diagonal pixel configurations can touch or cross themselves) and
written in level-0 pixel coordinates as a GeoJSON FeatureCollection that QuPath imports as
annotations. The tissue fraction of any level-0 rectangle is read from the integral image of the
mask with bilinear interpolation, which is the exact area-weighted fraction for a mask that is
piecewise constant on its pixels -- so tile selection never decodes a level-0 pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class TissueParams:
    threshold: float | None = None  # fixed saturation threshold in [0, 1]; None = Otsu
    min_saturation: float = 0.05  # floor for the Otsu threshold (saturation, 0-1)
    smooth_px: float = 1.0  # Gaussian sigma (overview px) before thresholding
    close_um: float = 16.0  # closing radius (µm): joins fragments of one section
    open_um: float = 8.0  # opening radius (µm): removes dust and thin debris
    min_area_um2: float = 10_000.0  # objects smaller than this are dropped (0.01 mm^2)
    max_hole_area_um2: float = 20_000.0  # holes smaller than this are filled


def saturation(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32 HSV saturation in [0, 1]; near-black pixels get 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)  # element-wise ufuncs: ~10x faster than a reduction over axis 2
    mn = np.minimum(np.minimum(r, g), b)
    s = (mx - mn).astype(np.float32) / np.maximum(mx, 1).astype(np.float32)
    s[mx <= 20] = 0.0
    return s


def saturation_u8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 HSV saturation x 255 (OpenCV's RGB2HSV); near-black (V <= 20) -> 0."""
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), cv2.COLOR_RGB2HSV)
    s = hsv[..., 1].copy()
    s[hsv[..., 2] <= 20] = 0
    return s


def otsu_u8(values: np.ndarray) -> float:
    """Otsu's threshold (in [0, 1]) of uint8 values/255: scikit-image's `threshold_otsu` on their exact
    256-level histogram (OpenCV's `calcHist`, exact below 2**24 values per level; `np.bincount`, which first
    widens every value to int64 and took 10% of a WSI-sized plan, above)."""
    import cv2
    from skimage.filters import threshold_otsu

    v = np.ascontiguousarray(values, dtype=np.uint8)
    if v.size < 2**24 and v.ndim == 2 and v.size:  # float32 counts are exact integers below 2**24
        counts = cv2.calcHist([v], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    else:
        counts = np.bincount(v.ravel(), minlength=256)
    levels = np.flatnonzero(counts)
    if len(levels) <= 1:
        return float(levels[0]) / 255.0 if len(levels) else 1.0  # one level: nothing above it
    lo, hi = levels[0], levels[-1] + 1
    return float(threshold_otsu(hist=(counts[lo:hi], np.arange(lo, hi)))) / 255.0


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (`skimage.filters.threshold_otsu`); pixels > it are foreground."""
    from skimage.filters import threshold_otsu

    v = np.asarray(values).ravel()
    if v.size == 0:
        return 1.0
    if v.min() == v.max():
        return float(v.max())  # one grey level: nothing to separate
    # the histogram skimage would build (`bins` equal bins over [min, max]), counted with bincount (10x
    # faster than np.histogram on floats), handed to skimage's Otsu as `hist=(counts, bin_centers)`
    lo, hi = float(v.min()), float(v.max())
    idx = np.minimum(((v - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    centers = lo + (np.arange(bins) + 0.5) * (hi - lo) / bins
    return float(threshold_otsu(hist=(counts, centers)))


@functools.cache
def _takes_max_size() -> bool:
    """scikit-image >= 0.26 takes `max_size` (objects of <= max_size px go); older ones `min_size`. Asked
    once: `inspect.signature` cost as much as a small mask's `remove_small_objects` itself."""
    import inspect

    from skimage.morphology import remove_small_objects as rso

    return "max_size" in inspect.signature(rso).parameters


def _size_kw(max_size: int) -> dict[str, int]:
    return {"max_size": int(max_size)} if _takes_max_size() else {"min_size": int(max_size) + 1}


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-px square (OpenCV, as CLAM/TRIDENT; edge pixels replicated)."""
    import cv2

    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.dilate(np.ascontiguousarray(mask, dtype=np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.erode(np.ascontiguousarray(mask, dtype=np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0


def _label4(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int32 labels of the 4-connected objects (0 = background): OpenCV's
    `connectedComponents`, the same objects as the `ndimage.label` scikit-image runs for connectivity 1,
    about 4x faster (it was 40% of `remove_small_objects` on a WSI-sized mask)."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    return cv2.connectedComponents(m, connectivity=4, ltype=cv2.CV_32S)[1]


def _rso_labels(mask: np.ndarray, max_size: int) -> np.ndarray:
    """`skimage.morphology.remove_small_objects` on the objects of `mask`, handed over as labels (its
    integer input: it removes the labels of <= max_size px); returns a bool mask."""
    import warnings

    from skimage.morphology import remove_small_objects as rso

    labels = _label4(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Only one label was provided": one object is fine
        return rso(labels, **_size_kw(max_size), out=labels) > 0


def remove_small_objects(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Drop 4-connected objects of at most `max_size` pixels (`skimage.morphology.remove_small_objects`
    with connectivity 1; the objects labelled by OpenCV, see `_label4`)."""
    return _rso_labels(np.asarray(mask, bool), max_size)


def fill_small_holes(mask: np.ndarray, max_size: int) -> np.ndarray:
    """Fill holes of at most `max_size` pixels (`skimage.morphology.remove_small_holes`, 4-connected).

    Background touching the image border is not a hole (glass beside tissue cut by the field of view):
    a background frame wider than `max_size` joins all of it into one component that is never filled."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    pad = int(np.ceil((max_size + 1) / (2 * (h + w)))) + 1
    framed = np.pad(~m, pad, mode="constant", constant_values=True)
    # remove_small_holes(m) == ~remove_small_objects(~m); done on the framed background directly
    background = _rso_labels(framed, max_size)[pad:-pad, pad:-pad]
    return ~background


def tissue_mask(rgb: np.ndarray, px_um: float, params: TissueParams | None = None) -> tuple[np.ndarray, float]:
    """Binary tissue mask (H, W) bool of an overview image whose pixels are `px_um` µm wide.

    Returns (mask, threshold used)."""
    import cv2

    p = params or TissueParams()
    sat = saturation_u8(rgb)  # (H, W) uint8, saturation x 255
    if p.smooth_px > 0:  # scipy's gaussian_filter kernel (radius 4 sigma, reflected edges), in OpenCV
        k = 2 * int(4.0 * p.smooth_px + 0.5) + 1
        sat = cv2.GaussianBlur(sat, (k, k), p.smooth_px, borderType=cv2.BORDER_REFLECT)
    thr = float(p.threshold) if p.threshold is not None else max(otsu_u8(sat), p.min_saturation)
    mask = sat > thr * 255.0
    r_close = int(round(p.close_um / px_um))
    r_open = int(round(p.open_um / px_um))
    if r_close >= 1:
        # pad (edge) so that closing does not erode tissue touching the border
        padded = np.pad(mask, r_close + 1, mode="edge")
        mask = _erode(_dilate(padded, r_close), r_close)[r_close + 1:-r_close - 1, r_close + 1:-r_close - 1]
    if r_open >= 1:
        padded = np.pad(mask, r_open + 1, mode="edge")
        mask = _dilate(_erode(padded, r_open), r_open)[r_open + 1:-r_open - 1, r_open + 1:-r_open - 1]
    px_area = px_um * px_um
    # objects strictly smaller than min_area are dropped; holes strictly smaller than max_hole filled
    min_obj = int(np.ceil(p.min_area_um2 / px_area)) - 1
    if min_obj >= 1 and mask.any():
        mask = remove_small_objects(mask, min_obj)
    max_hole = int(np.ceil(p.max_hole_area_um2 / px_area)) - 1
    if max_hole >= 1 and mask.any():
        mask = fill_small_holes(mask, max_hole)
    return mask, thr


# --- tissue fraction of rectangles ---------------------------------------------------------------
def integral_image(mask: np.ndarray) -> np.ndarray:
    """S[i, j] = sum of mask[:i, :j] (shape (H+1, W+1); OpenCV's `integral`, exact int32/float64)."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    depth = cv2.CV_32S if m.size < 2**31 else cv2.CV_64F
    return cv2.integral(m, sdepth=depth)


def _bilinear(s: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral image at fractional (y, x): exact area under a per-pixel-constant mask."""
    h, w = s.shape[0] - 1, s.shape[1] - 1
    y = np.clip(y, 0, h)
    x = np.clip(x, 0, w)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 1 if h > 0 else 0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 1 if w > 0 else 0)
    fy, fx = y - y0, x - x0
    y1, x1 = np.minimum(y0 + 1, h), np.minimum(x0 + 1, w)
    return (s[y0, x0] * (1 - fy) * (1 - fx) + s[y0, x1] * (1 - fy) * fx
            + s[y1, x0] * fy * (1 - fx) + s[y1, x1] * fy * fx)


def rect_fractions(integral: np.ndarray, x: np.ndarray, y: np.ndarray, w: float, h: float,
                   scale_x: float, scale_y: float) -> np.ndarray:
    """Area fraction of the mask inside each rectangle [x, x+w) x [y, y+h) given in level-0 px.

    `scale_*` = level-0 px per mask px. Parts of a rectangle outside the mask count as background.
    """
    x0, x1 = x / scale_x, (x + w) / scale_x
    y0, y1 = y / scale_y, (y + h) / scale_y
    area = (_bilinear(integral, y1, x1) - _bilinear(integral, y0, x1)
            - _bilinear(integral, y1, x0) + _bilinear(integral, y0, x0))
    full = (x1 - x0) * (y1 - y0)
    return np.clip(area / full, 0.0, 1.0)


# --- contours and GeoJSON ------------------------------------------------------------------------
def _drop_collinear(c: np.ndarray) -> np.ndarray:
    """Remove points lying on the straight line through their neighbours (lossless simplification)."""
    if len(c) < 4:
        return c
    prev, nxt = c[:-2], c[2:]
    mid = c[1:-1]
    cross = (mid[:, 0] - prev[:, 0]) * (nxt[:, 1] - prev[:, 1]) - (mid[:, 1] - prev[:, 1]) * (nxt[:, 0] - prev[:, 0])
    keep = np.concatenate([[True], np.abs(cross) > 1e-9, [True]])
    return c[keep]


def _ring(contour: np.ndarray, oy: int, ox: int, scale_x: float, scale_y: float, ccw: bool) -> list[list[float]]:
    """Marching-squares contour (row, col) in a 1-px padded crop -> closed level-0 (x, y) ring."""
    c = _drop_collinear(contour)
    xs = (c[:, 1] - 1 + ox + 0.5) * scale_x
    ys = (c[:, 0] - 1 + oy + 0.5) * scale_y
    pts = np.stack([xs, ys], axis=1)
    if not np.allclose(pts[0], pts[-1]):
        pts = np.vstack([pts, pts[:1]])
    area2 = float(np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1]))
    if (area2 > 0) != ccw:
        pts = pts[::-1]
    return np.round(pts, 2).tolist()


def _valid_rings(rings: list[list[list[float]]]) -> list[list[list[list[float]]]]:
    """One component's rings -> valid polygons' rings (shapely `make_valid` when the traced rings touch or
    cross; exteriors counter-clockwise, holes clockwise, as GeoJSON wants)."""
    import shapely
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    poly = Polygon(rings[0], rings[1:])
    if poly.is_valid:
        return [rings]
    fixed = shapely.make_valid(poly)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if isinstance(g, Polygon) and g.area > 0]
    out = []
    for part in parts:
        part = orient(part, sign=1.0)
        out.append([np.round(np.asarray(part.exterior.coords), 2).tolist()] +
                   [np.round(np.asarray(r.coords), 2).tolist() for r in part.interiors])
    return out


def mask_polygons(mask: np.ndarray, scale_x: float, scale_y: float) -> list[list[list[list[float]]]]:
    """Polygons (outer ring + hole rings, level-0 px) of each 4-connected tissue component, valid (shapely)."""
    from scipy import ndimage
    from skimage.measure import find_contours

    labels, n = ndimage.label(mask)
    polys = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == i
        filled = ndimage.binary_fill_holes(comp)
        oy, ox = sl[0].start, sl[1].start
        outer = max(find_contours(np.pad(filled, 1).astype(np.float32), 0.5), key=len)
        rings = [_ring(outer, oy, ox, scale_x, scale_y, ccw=True)]
        holes, _ = ndimage.label(filled & ~comp, structure=np.ones((3, 3)))
        for j, hs in enumerate(ndimage.find_objects(holes), start=1):
            if hs is None:
                continue
            hc = find_contours(np.pad(holes[hs] == j, 1).astype(np.float32), 0.5)
            if hc:
                rings.append(_ring(max(hc, key=len), oy + hs[0].start, ox + hs[1].start, scale_x, scale_y,
                                   ccw=False))
        polys.extend(_valid_rings(rings))
    return polys


def polygons_geojson(polys: list[list[list[list[float]]]], slide_id: str, mpp: float | None) -> dict:
    """A QuPath-importable FeatureCollection: one `Tissue` annotation per component (level-0 px)."""
    feats = []
    for k, rings in enumerate(polys):
        pts = np.asarray(rings[0])
        area = 0.5 * abs(float(np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1])))
        for hole in rings[1:]:
            h = np.asarray(hole)
            area -= 0.5 * abs(float(np.sum(h[:-1, 0] * h[1:, 1] - h[1:, 0] * h[:-1, 1])))
        props = {"objectType": "annotation", "name": f"{slide_id} tissue {k + 1}",
                 "classification": {"name": "Tissue", "color": [0, 160, 60]}, "area_px": round(area, 1)}
        if mpp:
            props["area_um2"] = round(area * mpp * mpp, 1)
        feats.append({"type": "Feature", "id": f"{slide_id}-tissue-{k + 1}",
                      "geometry": {"type": "Polygon", "coordinates": rings}, "properties": props})
    return {"type": "FeatureCollection", "features": feats}


# --- drawings ------------------------------------------------------------------------------------
def draw_overlay(thumb: Image.Image, mask: np.ndarray, polys: list, thumb_ds: tuple[float, float]) -> Image.Image:
    """Thumbnail with the mask tinted green and the contours outlined (holes in blue)."""
    base = np.asarray(thumb.convert("RGB")).astype(np.float32)
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(thumb.size, Image.Resampling.NEAREST)) > 0
    tint = np.array([0, 200, 80], np.float32)
    base[m] = 0.65 * base[m] + 0.35 * tint
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for rings in polys:
        for k, ring in enumerate(rings):
            pts = [(x / thumb_ds[0], y / thumb_ds[1]) for x, y in ring]
            if len(pts) >= 2:
                draw.line(pts, fill=(0, 120, 0) if k == 0 else (0, 60, 220), width=2)
    return img


def draw_grid(thumb: Image.Image, coords: np.ndarray, level0_size: float, thumb_ds: tuple[float, float],
              polys: list | None = None) -> Image.Image:
    """Thumbnail with each kept tile's outline drawn (and the tissue contours, if given)."""
    img = thumb.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    for rings in polys or []:
        pts = [(x / thumb_ds[0], y / thumb_ds[1]) for x, y in rings[0]]
        if len(pts) >= 2:
            draw.line(pts, fill=(0, 140, 0), width=1)
    for x, y in np.asarray(coords).reshape(-1, 2):
        x0, y0 = x / thumb_ds[0], y / thumb_ds[1]
        draw.rectangle([x0, y0, x0 + level0_size / thumb_ds[0] - 1, y0 + level0_size / thumb_ds[1] - 1],
                       outline=(20, 60, 220))
    return img
