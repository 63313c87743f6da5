"""Sections of the pathology domain, in the order the data flows: slides/tiles -> MoCo -> features/probe
-> MIL -> heatmaps. Each finds its stage by the files the stage writes (see the stage's module docstring)."""

from __future__ import annotations

from pathlib import Path

from domainfm.report import plots
from domainfm.report.files import Malformed, RunFolder, load_csv, load_json, need
from domainfm.report.sections import SECTIONS, Section, common_parent, fmt_float, fmt_int, guarded

MAX_SLIDES = 8  # thumbnails shown per tiling run (the table lists every slide)


def _src(rel: Path) -> str:
    return str(rel.parent) if str(rel.parent) != "." else "."


@SECTIONS.register("pathology/slides")
def slides(run: RunFolder) -> list[Section]:
    """Every slide of a tiling run (summary.csv: status, tiles, reason) and its tissue overlay."""
    return [guarded("pathology", "Slides and tiles", _src(rel), lambda s, r=rel: _slides(s, run, r))
            for rel in run.named("summary.csv") if (run.path(rel).parent / "thumbnails").is_dir()
            or (run.path(rel).parent / "status").is_dir()]


def _slides(sec: Section, run: RunFolder, rel: Path) -> None:
    rows = load_csv(run.path(rel))
    if rows and not {"slide_id", "status"} <= set(rows[0]):
        raise Malformed(f"{rel}: no slide_id/status columns")
    ok = [r for r in rows if r.get("status") == "ok"]
    sec.kv([("slides", fmt_int(len(rows))), ("tiled", fmt_int(len(ok))), ("failed", fmt_int(len(rows) - len(ok))),
            ("tiles", fmt_int(sum(int(r.get("n_tiles") or 0) for r in ok)))])
    sec.table(["slide", "status", "tiles", "level", "µm/px", "seconds", "reason"],
              [[r.get("slide_id"), r.get("status"), fmt_int(r.get("n_tiles")), r.get("level", ""),
                r.get("slide_mpp", ""), r.get("seconds", ""), r.get("reason", "")] for r in rows], "tiles per slide")
    base = run.path(rel).parent
    imgs: list[tuple[Path | bytes, str]] = []
    for r in ok[:MAX_SLIDES]:
        sid = r["slide_id"]
        for sub, what in (("thumbnails", "thumbnail"), ("masks", "tissue overlay"), ("grids", "tile grid")):
            p = base / sub / (f"{sid}_overlay.png" if sub == "masks" else f"{sid}.png")
            if p.is_file():
                imgs.append((p, f"{sid}: {what}"))
    sec.images(imgs)
    if len(ok) > MAX_SLIDES:
        sec.text(f"images of the first {MAX_SLIDES} of {len(ok)} tiled slides shown")


@SECTIONS.register("pathology/moco")
def moco(run: RunFolder) -> list[Section]:
    """MoCo v2 pretraining: the loss curve (loss_curve.png, or a plot of history.json) and the run's facts."""
    found = []
    for rel in run.named("history.json"):
        try:
            hist = load_json(run.path(rel))
        except Malformed as exc:
            found.append(Section("pathology", "MoCo pretraining", _src(rel)).warn(str(exc)))
            continue
        if isinstance(hist, dict) and "loss" in hist:
            found.append(guarded("pathology", "MoCo pretraining", _src(rel), lambda s, h=hist, r=rel: _moco(s, h, run, r)))
    return found


def _moco(sec: Section, hist: dict, run: RunFolder, rel: Path) -> None:
    base = run.path(rel).parent
    cfg = {}
    if (base / "config.json").is_file():
        try:
            cfg = load_json(base / "config.json")
        except Malformed as exc:
            sec.warn(str(exc))
    cfg = cfg if isinstance(cfg, dict) else {}
    losses = [x["loss"] if isinstance(x, dict) else x for x in hist["loss"]]
    sec.kv([("steps", fmt_int(cfg.get("steps", len(losses)))), ("images seen", fmt_int(cfg.get("images_seen"))),
            ("train time", f"{fmt_float(cfg.get('train_seconds'), 0)} s" if cfg.get("train_seconds") else None),
            ("backbone", cfg.get("backbone")), ("image size", cfg.get("image_size")),
            ("final loss", fmt_float(losses[-1]) if losses else None)])
    knn = hist.get("knn") or []
    sec.table(["step", "epoch", "kNN accuracy"], [[fmt_int(k.get("step")), k.get("epoch"), fmt_float(k.get("accuracy"))]
                                                 for k in knn if isinstance(k, dict)], "kNN monitor")
    if (base / "loss_curve.png").is_file():
        sec.images([(base / "loss_curve.png", "InfoNCE loss (the trainer's plot)")])
    elif losses:
        sec.images([(plots.curve_png({"loss": (range(1, len(losses) + 1), losses)}, "step", "InfoNCE loss",
                                     "MoCo v2 loss"), "loss per step (from history.json)")])


@SECTIONS.register("pathology/probe")
def probe(run: RunFolder) -> list[Section]:
    """Linear and kNN probes per encoder (results.json with `encoders`) and the UMAP/t-SNE embedding."""
    found = []
    for rel in run.named("results.json"):
        try:
            res = load_json(run.path(rel))
        except Malformed:
            continue  # another stage's results.json; a damaged probe result is caught below by its .md
        if isinstance(res, dict) and isinstance(res.get("encoders"), dict):
            found.append(guarded("pathology", "Feature probes", _src(rel), lambda s, x=res, r=rel: _probe(s, x, run, r)))
    return found


def _probe(sec: Section, res: dict, run: RunFolder, rel: Path) -> None:
    rows = []
    for name, r in res["encoders"].items():
        lin, knn = need(r, "linear", where=str(rel)), need(r, "knn", where=str(rel))
        rows.append([name, fmt_float(lin.get("auc")), fmt_float(lin.get("accuracy")), fmt_float(knn.get("auc")),
                     fmt_float(knn.get("accuracy")), r.get("dim", ""), f"{r.get('n_train', '')} / {r.get('n_test', '')}"])
    sec.table(["encoder", "linear AUC", "linear acc", "kNN AUC", "kNN acc", "dim", "n train / test"], rows,
              "frozen-feature probes on the test split")
    png = run.path(rel).parent / "embedding.png"
    if png.is_file():
        sec.images([(png, "UMAP of the test features")])


@SECTIONS.register("pathology/mil")
def mil(run: RunFolder) -> list[Section]:
    """MIL cross-validation: AUC with bootstrap CIs (CV and external cohorts) per model, with ROC curves."""
    runs = []
    for rel in run.named("results.json"):
        try:
            res = load_json(run.path(rel))
        except Malformed as exc:
            if (run.path(rel).parent / "roc_cv.png").is_file():
                runs.append((rel, exc))
            continue
        if isinstance(res, dict) and "cv_pooled" in res:
            runs.append((rel, res))
    if not runs:
        return []
    # one section for all MIL runs: the table compares them; ROC curves follow, one row per run
    return [guarded("pathology", "MIL", common_parent([r for r, _ in runs]), lambda s: _mil(s, runs, run))]


def _auc(m: object) -> str:
    if not isinstance(m, dict) or m.get("auc") is None:
        return "n/a"
    ci = m.get("auc_ci") or [None, None]
    return f"{m['auc']:.3f} [{fmt_float(ci[0])}, {fmt_float(ci[1])}]"


def _mil(sec: Section, runs: list, run: RunFolder) -> None:
    rows, imgs = [], []
    for rel, res in runs:
        if isinstance(res, Exception):
            sec.warn(str(res))
            continue
        ext = res.get("external") or {}
        ext_txt = "; ".join(f"{k}: {_auc(v.get('ensemble'))} (n={v.get('n_slides', '?')})" for k, v in ext.items())
        rows.append([str(rel.parent), res.get("model", ""), fmt_int(res.get("n_slides")), fmt_int(res.get("n_positive")),
                     _auc(res.get("cv_pooled")), ext_txt or "-"])
        base = run.path(rel).parent
        for p in [base / "roc_cv.png", *sorted(base.glob("roc_external_*.png"))]:
            if p.is_file():
                imgs.append((p, f"{rel.parent}: {p.stem.replace('_', ' ')}"))
    sec.table(["run", "model", "slides", "positive", "CV AUC [95% CI]", "external AUC [95% CI]"], rows,
              "patient-level bootstrap CIs")
    sec.images(imgs)


@SECTIONS.register("pathology/heatmaps")
def heatmaps(run: RunFolder) -> list[Section]:
    """Attention/score heatmaps over slides with their top- and bottom-scoring tiles (the gallery)."""
    metas = [rel for rel in run.files if rel.name.endswith("_heatmap.json")]
    if not metas:
        return []
    return [guarded("pathology", "Heatmaps", _src(metas[0]), lambda s: _heatmaps(s, metas, run))]


def _heatmaps(sec: Section, metas: list[Path], run: RunFolder) -> None:
    rows = []
    for rel in metas:
        sid = rel.name.removesuffix("_heatmap.json")
        try:
            m = load_json(run.path(rel))
        except Malformed as exc:
            sec.warn(str(exc))
            continue
        m = m if isinstance(m, dict) else {}
        rows.append([sid, fmt_float(m.get("score"), 2), fmt_int(m.get("n_tiles")), m.get("target_mpp", ""),
                     m.get("encoder", "")])
        base = run.path(rel).parent
        sec.images([(p, f"{sid}: {cap}") for p, cap in ((base / f"{sid}_heatmap_overlay.png", "heatmap over the slide"),
                                                        (base / f"{sid}_heatmap.png", "heatmap"),
                                                        (base / f"{sid}_gallery.png", "top / bottom tiles"))
                    if p.is_file()])
    sec.items.insert(0, {"kind": "table", "columns": ["slide", "P(tumour)", "tiles", "µm/px", "encoder"],
                         "rows": rows, "caption": "slides scored"})
