"""`domainfm pathology heatmap`: raw slide -> tiles -> features (the model's encoder) -> heatmap.

Uses the slide and feature APIs of the other stages (CONTRACTS.md): `tile_slide` cuts the tiles at
the resolution the model was trained on (recorded in the model folder) and writes the thumbnail and
its downsample; `extract_slide_features` embeds them with the encoder recorded at train time; the
MIL model scores every tile. The heatmap shows by default calibrated scores (slide probability x each
tile's relative evidence) on one colour scale shared by all slides (`scale="rank"` draws per-slide percentiles instead; see heatmap.py).
Outputs in OUT: `<id>_heatmap.png` (+ `_overlay.png`),
`<id>_tiles.geojson` (QuPath), `<id>_gallery.png` (top-k / bottom-k tiles), `<id>_scores.csv`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json
from domainfm.core.progress import get_logger

log = get_logger("mil.heatmap")


def encoder_spec(meta: dict[str, Any], override: str | None = None) -> str:
    """What to pass to `load_encoder` to rebuild the encoder the model's features came from."""
    if override:
        return override
    prov = meta.get("provenance", {})
    if prov.get("encoder_path"):
        return str(prov["encoder_path"])
    cfg = prov.get("encoder_config")
    cfg = json.loads(cfg) if isinstance(cfg, str) else (cfg or {})
    if cfg.get("source") == "random-init" and cfg.get("arch"):
        return str(cfg["arch"])  # the seeded random baseline is rebuilt identically from its name
    for key in ("path", "encoder_dir", "output_dir", "out"):
        if cfg.get(key) and Path(cfg[key]).exists():
            return str(cfg[key])
    raise UserError(f"the model folder records encoder {prov.get('encoder', '?')!r} but not where it lives; "
                    "pass --encoder PATH (the folder written by `domainfm pathology pretrain`)")


def tile_config(target_mpp: float | None, tile_size: int | None, slide_mpp: float | None) -> Any:
    """A slides `TileConfig` with only the fields given (the others keep the tiler's defaults)."""
    from domainfm.pathology.slides import TileConfig

    names = {f.name for f in dataclasses.fields(TileConfig)}
    kw = {k: v for k, v in {"target_mpp": target_mpp, "tile_size": tile_size, "slide_mpp": slide_mpp,
                            "save_tiles": False, "write_tiles": False}.items() if v is not None and k in names}
    return TileConfig(**kw)


def tile_images(coords_h5: Path, slide: Path, keep: set[int], batch_size: int = 64) -> dict[int, Any]:
    """The tile images (PIL) of the given row indices of the coords file, re-read as tiling defined them."""
    import h5py

    from domainfm.pathology.slides import read_tiles

    with h5py.File(coords_h5, "r") as f:
        rows = {tuple(c): i for i, c in enumerate(f["coords"][()].tolist())}
    out: dict[int, Any] = {}
    for coords, images in read_tiles(coords_h5, slide_path=slide, batch_size=batch_size):
        for c, im in zip(coords.tolist(), images, strict=True):
            i = rows[tuple(c)]
            if i in keep:
                out[i] = im.copy()
    return out


def slide_heatmap(model_dir: str | Path, slide: str | Path, out_dir: str | Path, *, encoder: str | None = None,
                  target_mpp: float | None = None, tile_size: int | None = None, slide_mpp: float | None = None,
                  top_k: int = 8, device: str = "cpu", batch_size: int = 64,
                  scale: str = "calibrated") -> dict[str, Any]:
    import h5py
    from PIL import Image

    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_slide_features
    from domainfm.pathology.mil.heatmap import (
        SCALES,
        calibrated_tile_scores,
        gallery,
        save_geojson,
        save_heatmap,
        top_bottom,
    )
    from domainfm.pathology.mil.report import write_predictions
    from domainfm.pathology.mil.store import load_mil_model
    from domainfm.pathology.mil.train import predict
    from domainfm.pathology.slides import tile_slide

    slide, out = Path(slide), Path(out_dir)
    if scale not in SCALES:
        raise UserError(f"--scale {scale!r}: choose {', '.join(SCALES)}")
    if not slide.exists():
        raise UserError(f"slide not found: {slide}")
    model, meta = load_mil_model(model_dir, device)
    prov = meta.get("provenance", {})
    enc_cfg = prov.get("encoder_config")
    enc_cfg = json.loads(enc_cfg) if isinstance(enc_cfg, str) else (enc_cfg or {})
    # the input size the training features were made at (a random-init name defaults to 224 otherwise)
    enc = load_encoder(encoder_spec(meta, encoder), device=device, image_size=enc_cfg.get("image_size"))
    if enc.embed_dim != meta["in_dim"]:
        raise UserError(f"encoder {enc.name!r} gives {enc.embed_dim}-d features, the model expects {meta['in_dim']}")
    # tile at the resolution and size the training tiles had, unless told otherwise
    mpp = target_mpp or prov.get("target_mpp") or None
    size = tile_size or prov.get("tile_size") or prov.get("image_size") or None
    cfg = tile_config(float(mpp) if mpp else None, int(size) if size else None, slide_mpp)
    tiles_dir = out / "tiling"
    summary = tile_slide(slide, tiles_dir, cfg)
    sid = (summary or {}).get("slide_id") or next(iter(sorted((tiles_dir / "coords").glob("*.h5")))).stem
    coords_h5 = tiles_dir / "coords" / f"{sid}.h5"
    if not coords_h5.is_file():
        raise UserError(f"{slide.name}: tiling wrote no coordinates ({summary})")
    feats_h5 = out / "features" / f"{sid}.h5"
    feats_h5.parent.mkdir(parents=True, exist_ok=True)
    extract_slide_features(enc, coords_h5, feats_h5, batch_size=batch_size, device=device, slide_path=slide)
    with h5py.File(feats_h5, "r") as f:
        x = f["features"][()].astype(np.float32)
        coords = f["coords"][()]
    from domainfm.pathology.slides.coords import coords_attrs

    attrs = coords_attrs(coords_h5)  # root + coords-dataset (CLAM/TRIDENT) attrs, level0_tile_size derived
    if len(x) == 0:
        raise UserError(f"{slide.name}: no tissue tiles at {mpp} um/px; nothing to draw")
    probs, tile_scores = predict(model, [x], device=device)
    scores = tile_scores[0]
    ds = float(attrs.get("thumb_downsample", 0) or 0)
    thumb_path = tiles_dir / "thumbnails" / f"{sid}.png"
    if not ds or not thumb_path.is_file():
        raise UserError(f"{coords_h5}: no thumbnail / thumb_downsample recorded by tiling")
    level0_tile = float(attrs.get("level0_tile_size") or attrs.get("tile_size"))
    thumb = Image.open(thumb_path).convert("RGB")
    kind = meta.get("tile_score_kind", "logit")
    # calibrated: probabilities on the slide prediction's scale (fixed 0..1 for all slides), see heatmap.py
    p_tile = calibrated_tile_scores(scores, float(probs[0]), kind)
    drawn = p_tile if scale == "calibrated" else scores
    what = "calibrated P(positive)" if scale == "calibrated" else f"{kind} ({scale})"
    heat = save_heatmap(thumb, coords, drawn, level0_tile, ds, out / f"{sid}_heatmap.png", normalise_how=scale,
                        title=f"{meta['model']} {what}, slide P(pos)={probs[0]:.2f}")
    geo = save_geojson(coords, scores, level0_tile, out / f"{sid}_tiles.geojson", kind=kind,
                       extra={"p_tile": p_tile})
    top, bottom = top_bottom(scores, top_k)
    ims = tile_images(coords_h5, slide, set(top.tolist()) | set(bottom.tolist()), batch_size)
    gal = gallery([ims[i] for i in top], [float(scores[i]) for i in top], [ims[i] for i in bottom],
                  [float(scores[i]) for i in bottom], out / f"{sid}_gallery.png")
    write_predictions(out / f"{sid}_scores.csv", [{"x": int(c[0]), "y": int(c[1]), "score": float(s), "p_tile": float(q)}
                                                   for c, s, q in zip(coords, scores, p_tile, strict=True)])
    res = {"slide_id": sid, "score": float(probs[0]), "n_tiles": int(len(x)), "encoder": enc.name,
           "target_mpp": mpp, "tile_size": size, "heatmap": str(heat), "geojson": str(geo), "gallery": str(gal),
           "thumbnail": str(thumb_path), "thumb_downsample": ds, "level0_tile_size": level0_tile, "scale": scale}
    atomic_write_json(out / f"{sid}_heatmap.json", res)
    return res
