"""`domainfm pathology bags | mil train/predict/list | heatmap` (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from domainfm.core.errors import UserError
from domainfm.core.locks import writes_output

mil_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Multiple-instance learning on slide feature bags: train (nested CV), predict, list.")


def bags(features_h5: Path = typer.Argument(..., help="labelled feature file from `extract --images`"),
         out: Path = typer.Option(..., "-o", "--out", help="output folder (one .h5 per bag + labels.csv)"),
         n_bags: int = typer.Option(100, "--n-bags", help="number of virtual slides"),
         bag_size: int = typer.Option(64, "--bag-size", help="tiles per virtual slide"),
         positive_fraction: tuple[float, float] = typer.Option(
             (0.01, 0.25), "--positive-fraction", help="LO HI range of the tumour-tile fraction in a positive bag"),
         seed: int = typer.Option(0, "--seed", help="random seed"),
         positive_bags: float = typer.Option(0.5, "--positive-bags", help="share of positive bags"),
         positive_class: str = typer.Option("1", "--positive-class", help="class name counted as positive"),
         slides_per_patient: int = typer.Option(1, "--slides-per-patient", help="bags grouped per patient"),
         cohort: str = typer.Option("", "--cohort", help="value of a cohort column in labels.csv"),
         prefix: str = typer.Option("bag", "--prefix", help="slide_id prefix"),
         tile_size: int = typer.Option(0, "--tile-size", help="synthetic grid cell size (0: image size)"),
         patch_mpp: float = typer.Option(0.0, "--patch-mpp", help="um/px of the patches (PCam: 0.972)"),
         ) -> None:
    """Build PCam-bags-style virtual slides from a labelled tile feature file."""
    from domainfm.pathology.mil.bags import BagsConfig, build_bags

    cfg = BagsConfig(n_bags=n_bags, bag_size=bag_size, positive_fraction=tuple(positive_fraction), seed=seed,
                     positive_bags=positive_bags, positive_class=positive_class,
                     slides_per_patient=slides_per_patient, cohort=cohort, prefix=prefix, tile_size=tile_size,
                     patch_mpp=patch_mpp)
    m = build_bags(features_h5, out, cfg)
    print(f"{m['n_bags']} bags ({m['n_positive_bags']} positive) of {bag_size} tiles -> {out}/ "
          f"({m['n_duplicates_dropped']} duplicate tiles dropped; labels in {out}/labels.csv)")


@mil_app.command("list")
def list_models() -> None:
    """List the MIL aggregators."""
    from domainfm.pathology.mil.models import MIL_MODELS

    for name in MIL_MODELS.names():
        print(f"{name:<10} {MIL_MODELS.describe(name)}")


def _externals(labels_csv: Path, features: Path, ext_features: Path | None, ext_labels: Path | None,
               cv_cohort: str | None) -> tuple[object, dict]:
    """The CV cohort and the external cohorts (from the `cohort` column and/or a second CSV)."""
    from domainfm.pathology.mil.data import load_cohort, read_labels

    rows = all_rows = read_labels(labels_csv)
    names = list(dict.fromkeys(r.cohort for r in rows))
    externals = {}
    if len(names) > 1:
        cv_name = cv_cohort or names[0]
        if cv_name not in names:
            raise UserError(f"--cv-cohort {cv_name!r} not in the cohort column ({', '.join(names)})")
        for name in names:
            if name != cv_name:
                externals[name] = load_cohort(features, [r for r in rows if r.cohort == name])
        rows = [r for r in rows if r.cohort == cv_name]
        print(f"cohort column: cross-validating on {cv_name!r}, external: {', '.join(externals)}")
    cohort = load_cohort(features, rows)
    if (ext_features is None) != (ext_labels is None):
        raise UserError("--external-features and --external-labels go together")
    if ext_features is not None:
        ext_rows = read_labels(ext_labels)
        name = ext_rows[0].cohort or "external"
        externals[name if name not in externals else f"{name}_2"] = load_cohort(ext_features, ext_rows)
    # every feature file (CV and external) must come from one encoder: the files record theirs
    from domainfm.pathology.mil.store import check_same_encoder, feature_file_records

    records = feature_file_records(features, [r.slide_id for r in all_rows])
    if ext_features is not None:
        records.update(feature_file_records(ext_features, [r.slide_id for r in ext_rows]))
    check_same_encoder(records)
    return cohort, externals


@mil_app.command("train")
@writes_output("out")
def train(features: Path = typer.Option(..., "--features", help="folder of per-slide feature .h5 files"),
          labels: Path = typer.Option(..., "--labels", help="CSV: slide_id, patient_id, label[, cohort]"),
          model: str = typer.Option("chowder", "--model", help="aggregator (see `mil list`)"),
          out: Path = typer.Option(..., "-o", "--out", help="model folder (results, final model)"),
          external_features: Path | None = typer.Option(None, "--external-features",
                                                           help="features of an external cohort"),
          external_labels: Path | None = typer.Option(None, "--external-labels",
                                                         help="labels CSV of the external cohort"),
          cv_cohort: str | None = typer.Option(None, "--cv-cohort",
                                                  help="with a cohort column: the cohort to cross-validate"),
          epochs: int = typer.Option(50, "--epochs"), folds: int = typer.Option(5, "--folds"),
          inner_folds: int = typer.Option(5, "--inner-folds", help="0: no hyper-parameter search"),
          repeats: int = typer.Option(1, "--repeats"), seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("cpu", "--device"), batch_size: int = typer.Option(16, "--batch-size"),
          max_tiles: int = typer.Option(1000, "--max-tiles", help="tile cap per slide when training"),
          hidden: int = typer.Option(0, "--hidden", help="aggregator width (0: the model's published one)"),
          dropout: float | None = typer.Option(None, "--dropout", help="aggregator dropout (unset: the model's)"),
          grid_lr: str = typer.Option("1e-3,1e-4", "--grid-lr"), grid_wd: str = typer.Option("0,1e-4", "--grid-wd"),
          n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for CIs"),
          threads: int = typer.Option(1, "--threads", help="torch CPU threads (MIL models are small: "
                                                       "1 is fastest on CPU; 0 = torch default)"),
          ) -> None:
    """Nested cross-validation (+ external cohorts), then a final model trained on all the data."""
    import torch

    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.models import MIL_MODELS
    from domainfm.pathology.mil.report import fmt_auc

    MIL_MODELS.get(model)  # unknown names fail here, listing the known ones
    if threads:
        torch.set_num_threads(threads)
    cfg = CVConfig(model=model, epochs=epochs, batch_size=batch_size, max_tiles=max_tiles, hidden=hidden,
                   dropout=dropout, seed=seed, device=device, folds=folds, inner_folds=inner_folds,
                   repeats=repeats, grid_lr=grid_lr, grid_wd=grid_wd, n_boot=n_boot)
    cohort, externals = _externals(labels, features, external_features, external_labels, cv_cohort)
    res = train_and_evaluate(cohort, cfg, out, externals,
                             {"features": str(features), "labels": str(labels)})
    print(f"{model}: CV AUC {fmt_auc(res['cv_pooled'])} on {res['n_slides']} slides "
          f"(fold mean {res['cv_fold_auc']['mean']:.3f} ± {res['cv_fold_auc']['sd']:.3f})")
    for name, e in res["external"].items():
        print(f"{model}: external {name} AUC {fmt_auc(e['ensemble'])} (fold ensemble), "
              f"{fmt_auc(e['final_model'])} (final model)")
    print(f"results: {out}/results.md, final model: {out}/model.safetensors")


@mil_app.command("predict")
def predict_cmd(model: Path = typer.Option(..., "--model", help="model folder from `mil train`"),
                features: Path = typer.Option(..., "--features", help="folder of per-slide feature .h5 files"),
                out: Path = typer.Option(..., "-o", "--out", help="output CSV (slide_id, score)"),
                device: str = typer.Option("cpu", "--device")) -> None:
    """Score every slide's features: `slide_id, score` with score = P(positive)."""
    from domainfm.pathology.mil.data import load_unlabelled
    from domainfm.pathology.mil.report import write_predictions
    from domainfm.pathology.mil.store import load_mil_model
    from domainfm.pathology.mil.train import predict

    net, meta = load_mil_model(model, device)
    # ours, CLAM's (h5_files/pt_files) or TRIDENT's (features_<encoder>) layout
    ids, bags, skipped = load_unlabelled(features, meta["in_dim"])
    # features of another encoder than the training features would give meaningless scores
    from domainfm.pathology.mil.store import encoder_differences, feature_file_records

    for path, attrs in feature_file_records(features, ids).items():
        diff = encoder_differences(meta.get("provenance", {}), attrs)
        if diff:
            raise UserError(f"{path}: made by another encoder than the model's training features "
                            f"({'; '.join(diff[:2])})")
    for s in skipped:
        print(f"skipped {s}")
    if not bags:
        raise UserError(f"no usable feature file in {features}")
    probs, _ = predict(net, bags, device=device)
    write_predictions(out, [{"slide_id": i, "score": round(float(p), 6)} for i, p in zip(ids, probs, strict=True)])
    print(f"{len(ids)} slides scored -> {out}" + (f" ({len(skipped)} skipped)" if skipped else ""))


def heatmap(model: Path = typer.Option(..., "--model", help="model folder from `mil train`"),
            slide: Path = typer.Option(..., "--slide", help="a whole-slide image"),
            out: Path = typer.Option(..., "-o", "--out", help="output folder"),
            encoder: str | None = typer.Option(None, "--encoder",
                                                  help="override the encoder recorded in the model folder"),
            target_mpp: float | None = typer.Option(None, "--target-mpp"),
            tile_size: int | None = typer.Option(None, "--tile-size"),
            slide_mpp: float | None = typer.Option(None, "--slide-mpp",
                                                      help="for slides without resolution metadata"),
            top_k: int = typer.Option(8, "--top-k", help="tiles in each row of the gallery"),
            device: str = typer.Option("cpu", "--device"),
            batch_size: int = typer.Option(64, "--batch-size"),
            scale: str = typer.Option("calibrated", "--scale", help="calibrated (slide P(positive) x the tile's "
                                      "relative evidence, one 0..1 scale for all slides), rank (per-slide "
                                      "percentile) or minmax"),
            features: Path | None = typer.Option(None, "--features", help="use this slide's features from a "
                                                 "folder (ours, CLAM h5_files, TRIDENT features_*) instead of "
                                                 "tiling and extracting")) -> None:
    """Raw slide -> tiles -> features (the model's encoder) -> per-tile scores -> heatmap, GeoJSON, gallery."""
    from domainfm.pathology.mil.slide_heatmap import slide_heatmap

    if features is not None:
        from domainfm.pathology.mil.feature_heatmap import feature_heatmap

        res = feature_heatmap(model, slide, features, out, device=device, scale=scale)
        print(f"{res['slide_id']}: P(positive) = {res['score']:.3f} over {res['n_tiles']} tiles "
              f"(tile width {res['level0_tile_size']:g} level-0 px, from the {res['tile_size_from']})")
        for k in ("heatmap", "geojson", "scores"):
            print(f"  {k}: {res[k]}")
        return
    res = slide_heatmap(model, slide, out, encoder=encoder, target_mpp=target_mpp, tile_size=tile_size,
                        slide_mpp=slide_mpp, top_k=top_k, device=device, batch_size=batch_size, scale=scale)
    print(f"{res['slide_id']}: P(positive) = {res['score']:.3f} over {res['n_tiles']} tiles")
    for k in ("heatmap", "geojson", "gallery"):
        print(f"  {k}: {res[k]}")


def register(app: typer.Typer) -> None:
    """Add `bags`, `mil ...` and `heatmap` to the pathology app."""
    app.command("bags")(bags)
    app.add_typer(mil_app, name="mil")
    app.command("heatmap")(heatmap)
