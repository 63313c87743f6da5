"""`domainfm pathology tile SLIDE_OR_DIR... -o OUT`: tissue-aware tiling of whole-slide images."""

from __future__ import annotations

from pathlib import Path

import typer

from domainfm.core.locks import writes_output


def register(app: typer.Typer) -> None:
    """Add `tile`, `camelyon16` and `annotations` to the pathology app."""
    app.command("tile")(tile)
    app.command("camelyon16")(camelyon16)
    app.command("annotations")(annotations)


def camelyon16(root: Path = typer.Argument(..., help="a Camelyon16-style folder (normal_*, tumor_*, test_* "
                                           "slides, lesion_annotations/*.xml, reference.csv)"),
               out: Path = typer.Option(..., "-o", "--out", help="labels CSV to write")) -> None:
    """Labels CSV (slide_id, patient_id, label, cohort, slide_path, annotation) for `mil train` from the
    Camelyon16 layout: normal_* = 0, tumor_* = 1 (cohort train), test_* from reference.csv (cohort test)."""
    import csv

    from domainfm.pathology.slides.annotations import camelyon16_rows

    rows, dropped = camelyon16_rows(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for d in dropped:
        typer.echo(f"dropped {d['slide_id']}: {d['reason']}")
    for r in rows:
        if r["note"]:
            typer.echo(f"note {r['slide_id']}: {r['note']}")
    n_pos = sum(r["label"] for r in rows)
    typer.echo(f"{len(rows)} slides ({n_pos} tumour) -> {out}")


def annotations(xml: Path = typer.Argument(..., help="ASAP XML annotation file (Camelyon16/17)"),
                out: Path = typer.Option(..., "-o", "--out", help="output folder"),
                coords: Path | None = typer.Option(None, "--coords", help="coords or feature .h5 (any layout): "  # noqa: UP007
                                                   "write per-tile tumour fraction and label"),
                scores: Path | None = typer.Option(None, "--scores", help="heatmap <id>_scores.csv (x, y, "  # noqa: UP007
                                                   "score): localisation AUC inside vs outside"),
                min_fraction: float = typer.Option(0.5, "--min-fraction",
                                                   help="a tile is tumour when this much of it is annotated")) -> None:
    """ASAP XML -> QuPath GeoJSON (+ tile labels for a coords file, + the localisation AUC of heatmap scores)."""
    import csv
    import json

    import numpy as np

    from domainfm.core.errors import UserError
    from domainfm.core.io import atomic_write_text
    from domainfm.pathology.slides.annotations import (
        annotations_geojson,
        localisation_auc,
        read_asap_xml,
        tile_labels,
    )
    from domainfm.pathology.slides.coords import read_coords

    anns = read_asap_xml(xml)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{xml.stem}.geojson", json.dumps(annotations_geojson(anns)))
    typer.echo(f"{len(anns)} annotations -> {out / (xml.stem + '.geojson')}")
    if coords is not None:
        info = read_coords(coords)
        if info.level0_size is None:
            raise UserError(f"{coords}: the tile size in level-0 px is not recorded")
        frac, lab = tile_labels(info.coords, info.level0_size, anns, min_fraction)
        with open(out / f"{xml.stem}_tile_labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["x", "y", "tumour_fraction", "label"])
            w.writerows([[int(c[0]), int(c[1]), round(float(f), 4), int(v)]
                         for c, f, v in zip(info.coords, frac, lab, strict=True)])
        typer.echo(f"{int(lab.sum())} of {len(lab)} tiles are tumour -> {out / (xml.stem + '_tile_labels.csv')}")
    if scores is not None:
        with open(scores, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"x", "y", "score"} <= set(rows[0]):
            raise UserError(f"{scores}: expected columns x, y, score (a heatmap <id>_scores.csv)")
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
        s = np.array([float(r["score"]) for r in rows])
        meta = scores.with_name(scores.name.replace("_scores.csv", "_heatmap.json"))
        tile0 = json.loads(meta.read_text()).get("level0_tile_size") if meta.is_file() else None
        if tile0 is None and coords is not None:
            tile0 = read_coords(coords).level0_size
        if tile0 is None:
            raise UserError("give --coords (or keep the heatmap's _heatmap.json beside the scores) for the tile size")
        res = localisation_auc(xy, s, float(tile0), anns, min_fraction)
        atomic_write_text(out / f"{xml.stem}_localisation.json", json.dumps(res))
        typer.echo(f"localisation AUC {res['auc']:.3f} ({res['n_inside']} tiles inside, "
                   f"{res['n_outside']} outside, {res['n_partial']} partial left out)")


@writes_output("out")
def tile(
    slides: list[Path] = typer.Argument(..., help="slide files and/or folders (searched recursively)"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder"),
    target_mpp: float = typer.Option(0.5, "--target-mpp", help="tile resolution in µm/px"),
    tile_size: int = typer.Option(224, "--tile-size", help="tile width/height in px at --target-mpp"),
    min_tissue: float = typer.Option(0.5, "--min-tissue", help="keep tiles with tissue fraction >= this"),
    overlap: float = typer.Option(0.0, "--overlap", help="fraction of a tile shared with its neighbour"),
    slide_mpp: str | None = typer.Option(  # noqa: UP007 - typer needs typing.Optional
        None, "--slide-mpp", help="µm/px for slides without metadata: a number, or a CSV 'slide_id,mpp' "
        "(CSV values override the metadata of the slides they name)"),
    tissue_threshold: float | None = typer.Option(  # noqa: UP007
        None, "--tissue-threshold", help="fixed saturation threshold in [0, 1] (default: Otsu)"),
    mask_mpp: float = typer.Option(4.0, "--mask-mpp", help="resolution of the tissue mask, µm/px"),
    thumb_mpp: float = typer.Option(4.0, "--thumb-mpp", help="resolution of thumbnails and overlays, µm/px"),
    min_area: float = typer.Option(10_000.0, "--min-area", help="smallest tissue piece kept, µm²"),
    max_hole: float = typer.Option(20_000.0, "--max-hole", help="holes smaller than this are filled, µm²"),
    save_tiles: bool = typer.Option(False, "--save-tiles/--no-save-tiles",
                                    help="also write tile images to OUT/tiles/<slide_id>/"),
    tile_format: str = typer.Option("jpg", "--tile-format", help="jpg or png"),
    jpeg_quality: int = typer.Option(90, "--jpeg-quality", help="JPEG quality of saved tiles"),
    allow_upsample: bool = typer.Option(False, "--allow-upsample",
                                        help="tile slides whose resolution is coarser than --target-mpp"),
    backend: str = typer.Option("auto", "--backend", help="auto, openslide, tiffslide or pillow"),
    workers: int = typer.Option(1, "--workers", help="slides tiled in parallel (processes)"),
    force: bool = typer.Option(False, "--force", help="redo slides already tiled"),
    executor: str = typer.Option("local", "--executor", help="local | ray: one task per slide (docs/scale.md)"),
    ray_address: str = typer.Option("", "--ray-address", help="--executor ray: join this cluster (HOST:PORT)"),
) -> None:
    """Find tissue, tile it at --target-mpp, write OUT/coords/<slide_id>.h5 (+ thumbnails, masks,
    GeoJSON, tile grid, optional tile images) and OUT/summary.csv. Exit status 1 if any slide failed."""
    from domainfm.pathology.slides.batch import format_table, tile_slides
    from domainfm.pathology.slides.tiling import TileConfig

    cfg = TileConfig(target_mpp=target_mpp, tile_size=tile_size, min_tissue=min_tissue, overlap=overlap,
                     tissue_threshold=tissue_threshold, mask_mpp=mask_mpp, thumb_mpp=thumb_mpp, min_area_um2=min_area,
                     max_hole_area_um2=max_hole, save_tiles=save_tiles, tile_format=tile_format,
                     jpeg_quality=jpeg_quality, allow_upsample=allow_upsample, backend=backend)
    from domainfm.core.executor import pool_options

    rows = tile_slides([str(s) for s in slides], out, cfg, slide_mpp=slide_mpp, workers=workers, force=force,
                       executor=executor, pool_opts=pool_options(executor, ray_address))
    typer.echo(format_table(rows))
    typer.echo(f"summary: {out / 'summary.csv'}")
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)
