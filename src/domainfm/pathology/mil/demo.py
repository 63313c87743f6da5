"""Demo stage: a small PCam-bags cohort, a short nested CV with Chowder and ABMIL, one real-slide heatmap.

Reads `ctx.state["features"]` (PCam train/valid feature files written by the features stage) and
`ctx.state["encoder"]` / `ctx.state["slides"]`. Budget: about two minutes on 2 busy cores
(`ctx.quick`: a few seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domainfm.core.demo import DemoContext
from domainfm.core.errors import UserError

PCAM_MPP = 0.972  # PCam patches: 96 px cut at 10x from Camelyon16 slides (0.243 um/px at 40x)


def _bags(src: str, out: Path, n_bags: int, bag_size: int, seed: int, prefix: str, cohort: str) -> dict[str, Any]:
    """Build bags, halving their number until the feature file has enough tiles for them."""
    from domainfm.pathology.mil.bags import BagsConfig, build_bags

    while True:
        cfg = BagsConfig(n_bags=n_bags, bag_size=bag_size, positive_fraction=(0.05, 0.25), seed=seed,
                         prefix=prefix, cohort=cohort, patch_mpp=PCAM_MPP)
        try:
            return build_bags(src, out, cfg)
        except UserError as exc:
            if "not enough tiles" not in str(exc) or n_bags <= 6:
                raise
            n_bags //= 2


def run(ctx: DemoContext) -> None:
    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.data import load_cohort
    from domainfm.pathology.mil.report import fmt_auc

    feats = ctx.state.get("features") or {}
    if ctx.data_dir is None or not feats.get("pcam_train") or not feats.get("pcam_valid"):
        why = "DOMAINFM_DATA is not set" if ctx.data_dir is None else "the features stage left no PCam features"
        print(f"  {why}: skipping PCam-bags, the MIL cross-validation and the slide heatmap "
              "(they need the real PCam patches and slides)")
        return
    out = ctx.out / "pathology" / "mil"
    size, n_cv, n_ext = (4, 10, 6) if ctx.quick else (24, 40, 20)
    # MoCo and its random-init baseline side by side (the same bags: same seeds, same tiles, other features)
    by_enc = ctx.state.get("features_by_encoder") or {"encoder": {"pcam_train": feats["pcam_train"],
                                                                  "pcam_valid": feats["pcam_valid"]}}
    rows, models = [], {}
    for label, f in by_enc.items():
        edir = out / label
        m_cv = _bags(f["pcam_train"], edir / "bags_train", n_cv, size, 0, "train", "train")
        m_ext = _bags(f["pcam_valid"], edir / "bags_valid", n_ext, size, 1, "valid", "valid")
        cohort = load_cohort(edir / "bags_train", edir / "bags_train" / "labels.csv")
        ext = load_cohort(edir / "bags_valid", edir / "bags_valid" / "labels.csv")
        for name in ("chowder", "abmil"):
            cfg = CVConfig(model=name, epochs=5 if ctx.quick else 25, folds=3, inner_folds=0, grid_lr="1e-3",
                           grid_wd="0", n_boot=100 if ctx.quick else 500, hidden=32 if ctx.quick else 128,
                           batch_size=16)
            res = train_and_evaluate(cohort, cfg, edir / name, {"valid": ext}, {"features": str(edir / "bags_train")})
            models.setdefault(name, edir / name)  # the first encoder's (MoCo's when there is one)
            e = res["external"]["valid"]["ensemble"]
            rows.append(f"  | {label:<11} | {name:<8} | {fmt_auc(res['cv_pooled']):<24} | {fmt_auc(e):<24} |")
    print(f"  PCam-bags: {m_cv['n_bags']} CV bags from train, {m_ext['n_bags']} external bags from valid, "
          f"{size} tiles each, 5-25% tumour tiles in positive bags; 3-fold patient-level CV, external = PCam valid")
    print("  | encoder     | model    | CV AUC [95% CI]          | external AUC [95% CI]    |")
    print("  |-------------|----------|--------------------------|--------------------------|")
    print("\n".join(rows))
    print("  demo scale (tiny bags, a few minutes of MoCo): not evidence either way; the measured MoCo vs "
          "random-init table is in docs/mil.md (benchmarks/thesis_pathology.py)")
    slides = [Path(s) for s in ctx.state.get("slides") or []]
    slides = [s for s in slides if s.name.startswith("CMU")] or slides
    if not slides:
        print("  no tiled slide from the slides stage: heatmap skipped")
        return
    from domainfm.pathology.mil.slide_heatmap import slide_heatmap

    enc = ctx.state.get("encoder")
    res = slide_heatmap(models["chowder"], slides[0], out / "heatmap", encoder=str(enc) if enc else None,
                        top_k=4 if ctx.quick else 8)
    print(f"  heatmap of {res['slide_id']} (P(tumour) {res['score']:.2f}, {res['n_tiles']} tiles at "
          f"{res['target_mpp']} um/px): {res['heatmap']}\n  QuPath GeoJSON: {res['geojson']}\n"
          f"  top/bottom tiles: {res['gallery']}")
