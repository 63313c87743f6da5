"""Lesion annotations (ASAP XML, as Camelyon16/17 ship them) -> valid polygons, tile labels, QuPath GeoJSON,
and the localisation quality of a heatmap; the Camelyon16 folder layout -> a labels CSV.

ASAP XML (what ASAP writes and Camelyon16 distributes in ``lesion_annotations/<slide>.xml``)::

    <ASAP_Annotations><Annotations>
      <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
        <Coordinates><Coordinate Order="0" X="62093.1" Y="113469.3"/>...</Coordinates>
      </Annotation>...
    </Annotations><AnnotationGroups><Group Name="_0" .../>...</AnnotationGroups></ASAP_Annotations>

Coordinates are level-0 pixels. Camelyon16's groups: ``_0`` and ``_1`` (and ``Tumor``) are metastases,
``_2`` marks normal tissue *inside* an annotated region, which is subtracted (the convention of the
challenge's mask-making code); Camelyon17 names its group ``metastases``. Hand-drawn rings can
self-intersect, so every ring goes through ``shapely.make_valid``.

Camelyon16 layout: ``training/normal/normal_001.tif``, ``training/tumor/tumor_001.tif``,
``training/lesion_annotations/tumor_001.xml``, ``testing/images/test_001.tif``, ``testing/reference.csv``
(rows ``Test_001,Tumor,Macro,...`` / ``Test_002,Normal``; no header). `camelyon16_rows` finds the slides
anywhere under the root by their names, so renamed parent folders do not matter.
"""

from __future__ import annotations

import csv
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError

TUMOUR_GROUPS = ("_0", "_1", "tumor", "tumour", "metastases")
EXCLUDE_GROUPS = ("_2", "exclusion", "normal")


@dataclass
class Annotation:
    name: str
    group: str
    geometry: Any  # shapely (Multi)Polygon in level-0 px, valid

    @property
    def is_exclusion(self) -> bool:
        return self.group.lower() in EXCLUDE_GROUPS


def read_asap_xml(path: str | os.PathLike[str]) -> list[Annotation]:
    """Polygons (and dots/rectangles, as their outline) of an ASAP XML file, made valid."""
    import shapely
    from shapely.geometry import Polygon

    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"{p}: not a readable ASAP XML file ({exc})") from None
    out = []
    for ann in root.iter("Annotation"):
        pts = sorted(((int(c.get("Order", i)), float(c.get("X")), float(c.get("Y")))
                      for i, c in enumerate(ann.iter("Coordinate"))), key=lambda t: t[0])
        if len(pts) < 3:
            continue  # a dot or a line has no area; nothing to label with it
        geom = shapely.make_valid(Polygon([(x, y) for _, x, y in pts]))
        geom = shapely.union_all([g for g in getattr(geom, "geoms", [geom]) if g.area > 0])  # drop stray lines
        if geom.is_empty:
            continue
        out.append(Annotation(ann.get("Name", ""), ann.get("PartOfGroup", ""), geom))
    return out


def tumour_region(annotations: list[Annotation]) -> Any:
    """Union of the tumour annotations minus the exclusion ones (a valid shapely geometry, maybe empty)."""
    import shapely

    pos = [a.geometry for a in annotations if not a.is_exclusion]
    neg = [a.geometry for a in annotations if a.is_exclusion]
    region = shapely.union_all(pos) if pos else shapely.Polygon()
    if neg:
        region = region.difference(shapely.union_all(neg))
    return region


def tile_tumour_fraction(coords: np.ndarray, tile0: float, region: Any) -> np.ndarray:
    """(N,) fraction of each level-0 square [x, x + tile0) x [y, y + tile0) inside `region`."""
    import shapely

    c = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if region.is_empty or len(c) == 0:
        return np.zeros(len(c))
    boxes = shapely.box(c[:, 0], c[:, 1], c[:, 0] + tile0, c[:, 1] + tile0)
    shapely.prepare(region)
    frac = np.zeros(len(c))
    hit = shapely.intersects(region, boxes)
    frac[hit] = shapely.area(shapely.intersection(boxes[hit], region)) / (tile0 * tile0)
    return frac


def tile_labels(coords: np.ndarray, tile0: float, annotations: list[Annotation],
                min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(fraction (N,), label (N,) int64): label 1 when at least `min_fraction` of the tile is tumour."""
    frac = tile_tumour_fraction(coords, tile0, tumour_region(annotations))
    return frac, (frac >= min_fraction).astype(np.int64)


def localisation_auc(coords: np.ndarray, scores: np.ndarray, tile0: float, annotations: list[Annotation],
                     min_fraction: float = 0.5) -> dict[str, Any]:
    """How well per-tile scores separate annotated tumour tiles from the others: ROC AUC of the scores of
    tiles inside (>= `min_fraction` tumour) vs outside (no tumour at all; partial tiles are left out)."""
    from sklearn.metrics import roc_auc_score

    frac = tile_tumour_fraction(coords, tile0, tumour_region(annotations))
    inside, outside = frac >= min_fraction, frac == 0
    s = np.asarray(scores, dtype=np.float64)
    n_in, n_out = int(inside.sum()), int(outside.sum())
    if n_in == 0 or n_out == 0:
        raise UserError(f"localisation AUC needs tiles inside and outside the annotation ({n_in} in, {n_out} out)")
    y = np.r_[np.ones(n_in), np.zeros(n_out)]
    auc = float(roc_auc_score(y, np.r_[s[inside], s[outside]]))
    return {"auc": auc, "n_inside": n_in, "n_outside": n_out, "n_partial": int(len(s) - n_in - n_out)}


def annotations_geojson(annotations: list[Annotation]) -> dict[str, Any]:
    """QuPath-importable FeatureCollection: one annotation per polygon, classified Tumor or Exclusion."""
    from shapely.geometry import mapping

    feats = []
    for a in annotations:
        cls = {"name": "Exclusion", "color": [0, 0, 255]} if a.is_exclusion else {"name": "Tumor",
                                                                                   "color": [200, 0, 0]}
        geom = mapping(a.geometry)
        feats.append({"type": "Feature", "geometry": _lists(geom),
                      "properties": {"objectType": "annotation", "name": a.name or a.group,
                                     "classification": cls, "isLocked": False}})
    return {"type": "FeatureCollection", "features": feats}


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lists(v) for v in obj]
    return obj


# --- Camelyon16 layout -------------------------------------------------------------------------------
_C16 = re.compile(r"^(normal|tumor|test)_(\d{3})$", re.IGNORECASE)


def read_reference_csv(path: str | os.PathLike[str]) -> dict[str, int]:
    """Camelyon16 `reference.csv` (no header: `Test_001,Tumor,Macro,...`) -> {test_001: 1}."""
    out = {}
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh), 1):
            if not row or not row[0].strip():
                continue
            kind = row[1].strip().lower() if len(row) > 1 else ""
            if kind not in ("tumor", "normal"):
                if i == 1:
                    continue  # a header line
                raise UserError(f"{path}:{i}: expected Tumor or Normal, got {row[1:2]}")
            out[row[0].strip().lower()] = int(kind == "tumor")
    return out


def camelyon16_rows(root: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Slides of a Camelyon16-style tree -> (rows `slide_id, patient_id, label, cohort, slide_path,
    annotation`, dropped `slide_id, reason`). normal_* = 0, tumor_* = 1 (cohort train), test_* from
    reference.csv (cohort test). Each slide is its own patient (Camelyon16 has one slide per patient)."""
    from domainfm.pathology.slides.readers import SLIDE_EXTENSIONS, slide_id_of

    r = Path(root)
    if not r.is_dir():
        raise UserError(f"Camelyon16 folder not found: {r}")
    refs = sorted(r.rglob("reference.csv"))
    reference = read_reference_csv(refs[0]) if refs else {}
    xmls = {p.stem.lower(): p for p in r.rglob("*.xml")}
    rows, dropped = [], []
    # every slide file by name (not `find_slides`, which merges symlinks to one file: names are the identity here)
    paths = sorted(f for f in r.rglob("*") if f.suffix.lower() in SLIDE_EXTENSIONS and not f.name.startswith("."))
    for path in paths:
        sid = slide_id_of(path)
        m = _C16.match(sid)
        if not m:
            dropped.append({"slide_id": sid, "reason": "name is not normal_NNN, tumor_NNN or test_NNN"})
            continue
        kind = m.group(1).lower()
        if kind == "test":
            if sid.lower() not in reference:
                dropped.append({"slide_id": sid, "reason": "not in reference.csv" if refs else "no reference.csv"})
                continue
            label, cohort = reference[sid.lower()], "test"
        else:
            label, cohort = int(kind == "tumor"), "train"
        ann = xmls.get(sid.lower())
        note = "tumour slide without annotation" if label == 1 and ann is None else ""
        rows.append({"slide_id": sid, "patient_id": sid, "label": label, "cohort": cohort,
                     "slide_path": str(path), "annotation": str(ann) if ann else "", "note": note})
    if not rows:
        raise UserError(f"{r}: no normal_*/tumor_*/test_* slides found")
    return rows, dropped
