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


CAVEAT = ("a few minutes of MoCo on 2 CPU cores cannot be expected to beat random init; the measured comparison "
          "(a >= 120-minute run: benchmarks/thesis_pathology.py) is the PCam-bags table in docs/mil.md")


def run(ctx: DemoContext) -> None:
    from domainfm.pathology.ssl.config import MocoConfig
    from domainfm.pathology.ssl.train import pretrain

    src = _tile_source(ctx)
    if src is None:
        print("  no PCam tiles (DOMAINFM_DATA) and no tile images from the slides stage: MoCo skipped; "
              "later stages use a random-init resnet18")
        return
    out = ctx.out / "pathology" / "moco"
    # a wall-clock budget rather than a step count: the same demo time on a fast or a busy machine
    cfg = MocoConfig(tiles=str(src), output=str(out), backbone="resnet18", image_size=32 if ctx.quick else 64,
                     batch_size=16 if ctx.quick else 64, queue_size=256 if ctx.quick else 4096,
                     max_steps=3 if ctx.quick else 0, max_minutes=0 if ctx.quick else 2.5,
                     device="cpu", checkpoint_every=15, resume=True, cache_dir=str(ctx.out / "tile_cache"))
    budget = f"{cfg.max_steps} steps" if ctx.quick else f"{cfg.max_minutes:g} minutes"
    print(f"  MoCo v2 on {src} ({budget}, batch {cfg.batch_size}, {cfg.image_size}px, queue {cfg.queue_size}, "
          f"{cfg.augment} augmentations; tiles decoded once into a cache)")
    ctx.state["encoder"] = str(pretrain(cfg))
    import json

    meta = json.loads((out / "config.json").read_text())
    print(f"  encoder: {ctx.state['encoder']} ({meta['steps']} steps, {meta['images_seen']} images seen in "
          f"{meta['train_seconds']:.0f} s; loss curve: {out / 'loss_curve.png'})")
    print(f"  note: {CAVEAT}")
