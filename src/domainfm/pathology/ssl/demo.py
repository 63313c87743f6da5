"""Demo stage: a small MoCo v2 encoder, pretrained for a couple of minutes on CPU.

On PCam tiles when ``ctx.data_dir`` holds them, else on the tile images the slides stage wrote
(``ctx.state["tiles"]``). Sets ``ctx.state["encoder"]`` to the encoder folder.
"""

from __future__ import annotations

from pathlib import Path

from domainfm.core.demo import DemoContext


def _tile_source(ctx: DemoContext) -> Path | None:
    if ctx.data_dir is not None and (ctx.data_dir / "pathology" / "pcam" / "train").is_dir():
        return ctx.data_dir / "pathology" / "pcam" / "train"
    tiles = ctx.state.get("tiles")
    if tiles and (Path(tiles) / "tiles").is_dir():
        from domainfm.pathology.ssl.data import IMAGE_SUFFIXES

        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in (Path(tiles) / "tiles").rglob("*")):
            return Path(tiles)
    return None


def run(ctx: DemoContext) -> None:
    from domainfm.pathology.ssl.config import MocoConfig
    from domainfm.pathology.ssl.train import pretrain

    src = _tile_source(ctx)
    if src is None:
        print("  no PCam tiles (DOMAINFM_DATA) and no tile images from the slides stage: MoCo skipped; "
              "later stages use a random-init resnet18")
        return
    out = ctx.out / "pathology" / "moco"
    # ~3 minutes on 2 idle CPU cores (measured: ~11 images/s, 6 s per step of 64, augmentation included)
    cfg = MocoConfig(tiles=str(src), output=str(out), backbone="resnet18", image_size=32 if ctx.quick else 64,
                     batch_size=16 if ctx.quick else 64, queue_size=256 if ctx.quick else 4096,
                     max_steps=3 if ctx.quick else 30, warmup_steps=0 if ctx.quick else 3,
                     workers=0 if ctx.quick else max(1, ctx.workers - 1), device="cpu", checkpoint_every=15,
                     resume=True)
    print(f"  MoCo v2 on {src} ({cfg.max_steps} steps of {cfg.batch_size}, {cfg.image_size}px, queue {cfg.queue_size})")
    ctx.state["encoder"] = str(pretrain(cfg))
    print(f"  encoder: {ctx.state['encoder']} (loss curve: {out / 'loss_curve.png'})")
