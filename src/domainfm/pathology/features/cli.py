"""`domainfm pathology extract` and `domainfm pathology probe` (heavy imports inside the commands)."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from domainfm.core.config import config_command
from domainfm.core.errors import UserError
from domainfm.core.locks import writes_output
from domainfm.pathology.features.probe import ProbeConfig
from domainfm.pathology.ssl.cli import add_short_flag


@dataclass
class ExtractConfig:
    encoder: str = field(default="", metadata={
        "help": "encoder folder from pretrain, an architecture name (random init) or a local weights file"})
    tiles: str = field(default="", metadata={"help": "tiling output folder (coords/*.h5, or CLAM's patches/*.h5, "
                                                     "TRIDENT's job folder): one .h5 per slide"})
    slides: str = field(default="", metadata={"help": "--tiles: slide folder, for CLAM/TRIDENT coords files"})
    images: str = field(default="", metadata={"help": "labelled ImageFolder: OUT/features.h5"})
    output: str = field(default="", metadata={"help": "output folder"})
    arch: str = field(default="", metadata={"help": "architecture of a weights file whose name does not say it"})
    image_size: int = field(default=0, metadata={"help": "input size (0 = the encoder's own; names: 224)"})
    batch_size: int = field(default=64, metadata={"help": "tiles per batch"})
    workers: int = field(default=2, metadata={"help": "DataLoader workers (threads for slide reading)"})
    fp16: bool = field(default=False, metadata={"help": "store features as float16 (and fp16 autocast on GPU)"})
    max_per_class: int = field(default=0, metadata={"help": "--images: seeded subset per class (0 = all)"})
    device: str = field(default="", metadata={"help": "cpu, cuda, ... (empty = cuda if available)"})
    layout: str = field(default="domainfm", metadata={
        "help": "--tiles output: domainfm (OUT/<id>.h5, TRIDENT-readable) or clam (OUT/h5_files + OUT/pt_files)"})
    qc: bool = field(default=False, metadata={"help": "--tiles: tile QC (background, pen, blur) -> qc_reason"})
    qc_drop: bool = field(default=False, metadata={"help": "--tiles: leave QC failures out (listed in the file)"})
    stain_reference: str = field(default="", metadata={
        "help": "--tiles: an H&E tile image; Macenko-normalise every tile to it (torchstain)"})
    executor: str = field(default="local", metadata={
        "help": "--tiles: local (slides one after the other) or ray (one task per slide; see docs/scale.md)"})
    ray_address: str = field(default="", metadata={"help": "--executor ray: join this cluster (HOST:PORT, auto)"})


def run_extract(cfg: ExtractConfig) -> dict:
    import json
    from pathlib import Path

    import torch

    from domainfm.core.executor import pool_options
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_image_folder, extract_tiles_dir

    if not cfg.encoder:
        raise UserError("give --encoder (a pretrain folder, an architecture name such as resnet18, or a weights file)")
    if bool(cfg.tiles) == bool(cfg.images):
        raise UserError("give exactly one of --tiles TILE_OUT_DIR or --images IMAGE_FOLDER")
    if not cfg.output:
        raise UserError("give the output folder with -o/--output")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    enc = load_encoder(cfg.encoder, device=device, arch=cfg.arch or None, image_size=cfg.image_size or None)
    out = Path(cfg.output)
    if cfg.images:
        path = extract_image_folder(enc, cfg.images, out / "features.h5", batch_size=cfg.batch_size, device=device,
                                    num_workers=cfg.workers, fp16=cfg.fp16, max_per_class=cfg.max_per_class or None)
        result = {"features": str(path), "encoder": enc.name}
    else:
        from domainfm.pathology.slides.qc import QCConfig, StainNormaliser

        norm = None
        if cfg.stain_reference:
            import numpy as np
            from PIL import Image

            if not Path(cfg.stain_reference).is_file():
                raise UserError(f"stain reference image not found: {cfg.stain_reference}")
            norm = StainNormaliser(np.asarray(Image.open(cfg.stain_reference).convert("RGB")))
        status = extract_tiles_dir(enc, cfg.tiles, out, batch_size=cfg.batch_size, device=device,
                                   num_workers=cfg.workers, fp16=cfg.fp16, layout=cfg.layout,
                                   qc=QCConfig() if (cfg.qc or cfg.qc_drop) else None, qc_drop=cfg.qc_drop,
                                   stain_normaliser=norm, slides=cfg.slides or None, executor=cfg.executor,
                                   pool_opts=pool_options(cfg.executor, cfg.ray_address))
        result = {"slides": status, "encoder": enc.name}
        failed = [s for s, v in status.items() if str(v).startswith("failed")]
        if failed:
            print(json.dumps(result, indent=1))
            raise UserError(f"{len(failed)} of {len(status)} slides failed: {', '.join(failed)}")
    print(json.dumps(result, indent=1))
    return result


def register(app: typer.Typer) -> None:
    """Add `extract` and `probe` to the pathology app."""

    @writes_output("output")
    def extract_cmd(cfg: ExtractConfig) -> None:
        run_extract(cfg)

    cmd = config_command(ExtractConfig, config_arg=False)(extract_cmd)
    add_short_flag(cmd, "output", "-o")
    app.command("extract", help="Tile features with an encoder: per slide (--tiles) or an ImageFolder (--images).")(cmd)

    def probe_cmd(cfg: ProbeConfig) -> None:
        from domainfm.pathology.features.probe import run_probe

        run_probe(cfg)

    pcmd = config_command(ProbeConfig, config_arg=False)(probe_cmd)
    add_short_flag(pcmd, "output", "-o")
    app.command("probe", help="Linear probe + kNN (AUC, accuracy) and a UMAP for several encoders side by side "
                "(e.g. --train PCAM/train --test PCAM/valid --encoder ENC --encoder resnet18 -o OUT).")(pcmd)
