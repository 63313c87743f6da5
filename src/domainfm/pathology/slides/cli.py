"""`domainfm pathology tile SLIDE_OR_DIR... -o OUT`: tissue-aware tiling of whole-slide images."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `tile` to the pathology app."""
    app.command("tile")(tile)


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
) -> None:
    """Find tissue, tile it at --target-mpp, write OUT/coords/<slide_id>.h5 (+ thumbnails, masks,
    GeoJSON, tile grid, optional tile images) and OUT/summary.csv. Exit status 1 if any slide failed."""
    from domainfm.pathology.slides.batch import format_table, tile_slides
    from domainfm.pathology.slides.tiling import TileConfig

    cfg = TileConfig(target_mpp=target_mpp, tile_size=tile_size, min_tissue=min_tissue, overlap=overlap,
                     tissue_threshold=tissue_threshold, mask_mpp=mask_mpp, thumb_mpp=thumb_mpp, min_area_um2=min_area,
                     max_hole_area_um2=max_hole, save_tiles=save_tiles, tile_format=tile_format,
                     jpeg_quality=jpeg_quality, allow_upsample=allow_upsample, backend=backend)
    rows = tile_slides([str(s) for s in slides], out, cfg, slide_mpp=slide_mpp, workers=workers, force=force)
    typer.echo(format_table(rows))
    typer.echo(f"summary: {out / 'summary.csv'}")
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)
