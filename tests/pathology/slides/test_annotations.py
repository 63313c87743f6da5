"""Camelyon16-style data: ASAP XML lesion annotations written here for the real slides, tile labels, QuPath
GeoJSON, the localisation AUC of heatmap scores, and the normal_*/tumor_*/test_* layout with reference.csv."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from domainfm.cli import main
from domainfm.pathology.slides import TileConfig, tile_slide
from domainfm.pathology.slides.annotations import (
    annotations_geojson,
    camelyon16_rows,
    localisation_auc,
    read_asap_xml,
    tile_labels,
)
from domainfm.pathology.slides.coords import read_coords

SLIDES = Path(os.environ.get("DOMAINFM_DATA", "/nonexistent")) / "pathology" / "slides"
CMU = SLIDES / "CMU-1-Small-Region.svs"  # 2220 x 2967, 0.499 µm/px
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"
pytestmark = pytest.mark.skipif(not CMU.is_file(), reason="needs $DOMAINFM_DATA/pathology/slides")

T = 224  # level-0 tile width of CMU-1-Small-Region at 0.5 µm/px, 224 px
RECT = (448, 896, 1344, 2016)  # tumour (group _0): x0, y0, x1, y1 on the tile grid
HOLE = (672, 1120, 896, 1344)  # normal tissue inside it (group _2): exactly one tile
BOWTIE = [(1568, 224), (1792, 448), (1792, 224), (1568, 448)]  # a self-intersecting ring (group _1)


def _asap(path: Path, polys: list[tuple[str, str, list[tuple[float, float]]]]) -> Path:
    """An ASAP XML file as ASAP writes it (Camelyon16's lesion_annotations)."""
    anns = []
    for i, (group, color, pts) in enumerate(polys):
        coords = "".join(f'\n\t\t\t\t<Coordinate Order="{k}" X="{x:.4f}" Y="{y:.4f}" />' for k, (x, y) in enumerate(pts))
        anns.append(f'\t\t<Annotation Name="Annotation {i}" Type="Polygon" PartOfGroup="{group}" Color="{color}">'
                    f"\n\t\t\t<Coordinates>{coords}\n\t\t\t</Coordinates>\n\t\t</Annotation>")
    groups = "".join(f'\n\t\t<Group Name="{g}" PartOfGroup="None" Color="#ff0000">\n\t\t\t<Attributes />\n\t\t</Group>'
                     for g in ("_0", "_1", "_2"))
    path.write_text('<?xml version="1.0"?>\n<ASAP_Annotations>\n\t<Annotations>\n' + "\n".join(anns) +
                    f"\n\t</Annotations>\n\t<AnnotationGroups>{groups}\n\t</AnnotationGroups>\n</ASAP_Annotations>\n")
    return path


def _box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _cmu_xml(path: Path) -> Path:
    return _asap(path, [("_0", "#F4FA58", _box(*RECT)), ("_2", "#64FE2E", _box(*HOLE)), ("_1", "#F4FA58", BOWTIE)])


def test_asap_xml_to_tile_labels_geojson_and_localisation(tmp_path: Path) -> None:
    xml = _cmu_xml(tmp_path / "tumor_001.xml")
    anns = read_asap_xml(xml)
    assert [a.group for a in anns] == ["_0", "_2", "_1"] and anns[1].is_exclusion
    assert all(a.geometry.is_valid for a in anns) and anns[2].geometry.area == pytest.approx(2 * 112 * 224 / 2)
    tile_slide(CMU, tmp_path / "t", TileConfig(target_mpp=0.5, tile_size=224, min_tissue=0.1))
    info = read_coords(tmp_path / "t" / "coords" / "CMU-1-Small-Region.h5")
    assert info.level0_size == T and len(info.coords) > 50
    frac, lab = tile_labels(info.coords, T, anns)
    x, y = info.coords[:, 0], info.coords[:, 1]
    in_rect = (x >= RECT[0]) & (x + T <= RECT[2]) & (y >= RECT[1]) & (y + T <= RECT[3])
    hole = (x == HOLE[0]) & (y == HOLE[1])
    bowtie = (x == 1568) & (y == 224)
    assert np.array_equal(lab.astype(bool), (in_rect & ~hole) | bowtie)
    assert np.allclose(frac[in_rect & ~hole], 1.0) and np.all(frac[hole] == 0)
    if bowtie.any():
        assert frac[bowtie][0] == pytest.approx(0.5)
    # localisation AUC: a heatmap that is hot on the annotation scores 1, a reversed one 0
    rng = np.random.default_rng(0)
    good = lab + 0.1 * rng.random(len(lab))
    assert localisation_auc(info.coords, good, T, anns)["auc"] == pytest.approx(1.0)
    assert localisation_auc(info.coords, -good, T, anns)["auc"] == pytest.approx(0.0)
    assert 0.3 < localisation_auc(info.coords, rng.random(len(lab)), T, anns)["auc"] < 0.7
    # QuPath GeoJSON: one classified annotation per polygon, level-0 coordinates kept
    geo = annotations_geojson(anns)
    f0 = geo["features"][0]
    assert f0["properties"]["objectType"] == "annotation" and f0["properties"]["classification"]["name"] == "Tumor"
    assert geo["features"][1]["properties"]["classification"]["name"] == "Exclusion"
    ring = f0["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and {tuple(p) for p in ring} == {tuple(map(float, p)) for p in _box(*RECT)}
    # the CLI: GeoJSON + tile labels + localisation AUC from a heatmap's scores CSV
    with open(tmp_path / "CMU_scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y", "score"])
        w.writerows([[int(c[0]), int(c[1]), float(s)] for c, s in zip(info.coords, good, strict=True)])
    rc = main(["pathology", "annotations", str(xml), "-o", str(tmp_path / "a"), "--coords",
               str(tmp_path / "t" / "coords" / "CMU-1-Small-Region.h5"), "--scores", str(tmp_path / "CMU_scores.csv")])
    assert rc == 0
    assert json.loads((tmp_path / "a" / "tumor_001_localisation.json").read_text())["auc"] == pytest.approx(1.0)
    with open(tmp_path / "a" / "tumor_001_tile_labels.csv") as fh:
        assert sum(int(r["label"]) for r in csv.DictReader(fh)) == int(lab.sum())


def test_camelyon16_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "CAMELYON16"
    for rel, src in (("training/tumor/tumor_001.tif", CMU), ("training/tumor/tumor_002.tif", CMU),
                     ("training/normal/normal_001.tif", TCGA), ("testing/images/test_001.tif", CMU),
                     ("testing/images/test_002.tif", TCGA), ("testing/images/test_003.tif", TCGA),
                     ("training/extra_slide.tif", TCGA)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(src)
    (root / "training" / "lesion_annotations").mkdir()
    _cmu_xml(root / "training" / "lesion_annotations" / "tumor_001.xml")
    (root / "testing" / "lesion_annotations").mkdir()
    _cmu_xml(root / "testing" / "lesion_annotations" / "test_001.xml")
    (root / "testing" / "reference.csv").write_text("Test_001,Tumor,Macro,\nTest_002,Normal,,\n")
    rows, dropped = camelyon16_rows(root)
    got = {r["slide_id"]: (r["label"], r["cohort"], Path(r["annotation"]).name if r["annotation"] else "")
           for r in rows}
    assert got == {"normal_001": (0, "train", ""), "tumor_001": (1, "train", "tumor_001.xml"),
                   "tumor_002": (1, "train", ""), "test_001": (1, "test", "test_001.xml"),
                   "test_002": (0, "test", "")}
    assert {d["slide_id"] for d in dropped} == {"test_003", "extra_slide"}
    assert main(["pathology", "camelyon16", str(root), "-o", str(tmp_path / "labels.csv")]) == 0
    out = capsys.readouterr().out
    assert "5 slides (3 tumour)" in out and "note tumor_002: tumour slide without annotation" in out
    with open(tmp_path / "labels.csv") as fh:
        assert {r["slide_id"]: r["cohort"] for r in csv.DictReader(fh)}["test_001"] == "test"
