"""Demo stage: features with the MoCo encoder, probe against random init, UMAP; slide features for MIL.

Sets ``ctx.state["features"]`` = {"pcam_train": h5, "pcam_valid": h5, "slides": dir} (what exists).
"""

from __future__ import annotations

from pathlib import Path

from domainfm.core.demo import DemoContext


def run(ctx: DemoContext) -> None:
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import extract_tiles_dir
    from domainfm.pathology.features.probe import ProbeConfig, run_probe

    out = ctx.out / "pathology" / "features"
    encoder = ctx.state.get("encoder") or "resnet18"
    features: dict[str, str] = {}
    size = 32 if ctx.quick else 64
    pcam = ctx.data_dir / "pathology" / "pcam" if ctx.data_dir is not None else None
    if pcam is not None and (pcam / "train").is_dir() and (pcam / "valid").is_dir():
        cfg = ProbeConfig(train=str(pcam / "train"), test=str(pcam / "valid"), encoder=list(dict.fromkeys([encoder, "resnet18"])),
                          output=str(out / "probe"), image_size=0 if encoder != "resnet18" else size,
                          max_train_per_class=40 if ctx.quick else 600, max_test_per_class=25 if ctx.quick else 300,
                          embedding="none" if ctx.quick else "umap", embedding_points=600,
                          workers=0 if ctx.quick else max(1, ctx.workers - 1), batch_size=128)
        print(f"  probe on PCam: {encoder} vs resnet18 random init "
              f"({cfg.max_train_per_class}/class train, {cfg.max_test_per_class}/class valid)")
        res = run_probe(cfg)
        first = next(iter(res["encoders"].values()))
        features["pcam_train"], features["pcam_valid"] = first["features"]["train"], first["features"]["test"]
        # every encoder's features, so the MIL stage shows MoCo beside its random-init baseline
        labels = ["moco", "random-init"] if encoder != "resnet18" else ["random-init"]
        ctx.state["features_by_encoder"] = {
            lab: {"pcam_train": r["features"]["train"], "pcam_valid": r["features"]["test"], "name": name}
            for lab, (name, r) in zip(labels, res["encoders"].items(), strict=False)}
        if "embedding" in res:
            print(f"  UMAP: {res['embedding']}")
    tiles = ctx.state.get("tiles")
    if tiles and (Path(tiles) / "coords").is_dir():
        enc = load_encoder(encoder, image_size=None if encoder != "resnet18" else size)
        status = extract_tiles_dir(enc, tiles, out / "slides", batch_size=64, num_workers=ctx.workers)
        print(f"  slide features: {status}")
        features["slides"] = str(out / "slides")
    ctx.state["features"] = features
