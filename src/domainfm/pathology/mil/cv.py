"""Nested cross-validation, external cohorts, and the final model (`domainfm pathology mil train`).

Outer loop: k folds stratified at patient level (no patient on both sides), repeated with a new
seed per repeat. Inner loop, on the outer-train part only: k' patient-level folds score every
(lr, weight decay) of the grid by the pooled inner out-of-fold AUC; the best is refit on the whole
outer-train part and scored once on the outer-test part. External cohorts are scored by the mean
probability of all outer-fold models ("ensemble") and by the final model, which is selected the same
way on all the data and trained on all of it. Each outer fold's result is cached under
`OUT/cv/<fingerprint>/` beside a `key.json` of every parameter (`cache_key`), so a killed run resumes
where it stopped with the same numbers, and a folder made with other parameters is refused. Runs
whose external cohorts share a patient with the CV cohort are refused before any training; metrics
use a patient-level bootstrap (mil/metrics.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_json, atomic_write_text
from domainfm.core.metrics import roc_auc
from domainfm.core.progress import get_logger, progress
from domainfm.pathology.mil.data import Cohort
from domainfm.pathology.mil.metrics import binary_metrics
from domainfm.pathology.mil.splits import patient_folds
from domainfm.pathology.mil.train import TrainConfig, fit, predict

log = get_logger("mil.cv")


@dataclass
class CVConfig(TrainConfig):
    folds: int = field(default=5, metadata={"help": "outer folds (patient-level, stratified)"})
    inner_folds: int = field(default=5, metadata={"help": "inner folds for the grid (0 or 1: no search)"})
    repeats: int = field(default=1, metadata={"help": "repeats of the outer CV with new seeds"})
    grid_lr: str = field(default="1e-3,1e-4", metadata={"help": "learning rates searched (comma-separated)"})
    grid_wd: str = field(default="0,1e-4", metadata={"help": "weight decays searched (comma-separated)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the AUC CIs"})

    def grid(self) -> list[tuple[float, float]]:
        try:
            lrs = [float(v) for v in self.grid_lr.split(",") if v.strip()]
            wds = [float(v) for v in self.grid_wd.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"bad grid: --grid-lr {self.grid_lr!r} --grid-wd {self.grid_wd!r}") from None
        if not lrs or not wds:
            raise UserError("the lr / weight-decay grid is empty")
        return [(lr, wd) for lr in lrs for wd in wds]

    def train_config(self, lr: float, wd: float, seed: int) -> TrainConfig:
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{**base, "lr": lr, "weight_decay": wd, "seed": seed})


def _pooled_auc(y: np.ndarray, p: np.ndarray) -> float:
    return roc_auc(y, p) if len(np.unique(y)) == 2 else float("nan")


def select_hparams(cohort: Cohort, cfg: CVConfig, seed: int) -> tuple[tuple[float, float], list[dict[str, Any]]]:
    """Pick (lr, wd) by pooled inner-CV AUC on `cohort` (ties: first in grid order)."""
    grid = cfg.grid()
    if cfg.inner_folds < 2 or len(grid) == 1:
        return grid[0], []
    y, bags = cohort.labels, cohort.features
    folds = patient_folds(y, cohort.patients, cfg.inner_folds, seed)
    scores = []
    for lr, wd in grid:
        oof = np.zeros(len(y))
        for j, (tr, te) in enumerate(folds):
            model = fit([bags[i] for i in tr], y[tr], cfg.train_config(lr, wd, seed + 17 * (j + 1)))
            oof[te], _ = predict(model, [bags[i] for i in te], cfg.batch_size, cfg.device)
        scores.append({"lr": lr, "weight_decay": wd, "inner_auc": _pooled_auc(y, oof)})
    best = max(range(len(grid)), key=lambda i: (np.nan_to_num(scores[i]["inner_auc"], nan=-1.0), -i))
    return grid[best], scores


# bump when a change of the code changes what a cached fold holds (2: published Chowder/DSMIL, model hparams)
CACHE_VERSION = 2


def cache_key(cohort: Cohort, externals: dict[str, Cohort], cfg: CVConfig) -> dict[str, Any]:
    """Everything that determines the CV results: the config (except the device), the model's full
    hyper-parameters (its defaults included), the code's cache version, and every slide's id, patient,
    label and feature bytes (a hash)."""
    from domainfm.pathology.mil.models import build_mil_model
    from domainfm.pathology.mil.train import model_kwargs

    c = dataclasses.asdict(cfg)
    c.pop("device", None)
    hp = build_mil_model(cfg.model, cohort.in_dim, **model_kwargs(cfg)).hparams()
    data = hashlib.sha256()
    for name, co in [("cv", cohort), *sorted(externals.items())]:
        data.update(name.encode())
        for s, x in zip(co.slides, co.features, strict=True):
            data.update(f"{s.slide_id}|{s.patient_id}|{s.label}|{x.shape}|".encode())
            data.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return {"version": CACHE_VERSION, "config": c, "model_hparams": hp, "data": data.hexdigest()}


def open_cache(out_dir: str | Path, key: dict[str, Any]) -> Path:
    """OUT/cv/<fingerprint>/ holding `key.json`; a folder whose key differs is refused, never reused."""
    fp = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(out_dir) / "cv" / fp
    key_file = cache / "key.json"
    canon = json.loads(json.dumps(key, sort_keys=True, default=str))
    if key_file.is_file():
        old = json.loads(key_file.read_text())
        if old != canon:
            diff = sorted(k for k in set(old) | set(canon) if old.get(k) != canon.get(k))
            raise UserError(f"{cache}: cached folds were made with other parameters ({', '.join(diff)} differ); "
                            "delete that folder or use another output folder")
    elif cache.is_dir() and any(cache.glob("r*_f*.json")):
        raise UserError(f"{cache}: cached folds without a key.json (made by an older version, unknown "
                        "parameters); delete that folder or use another output folder")
    else:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_json(key_file, canon)
    return cache


def check_cohorts(cohort: Cohort, externals: dict[str, Cohort]) -> None:
    """Refuse external cohorts that share a patient with the CV cohort (or with each other)."""
    seen = {"the CV cohort": set(cohort.patients.tolist())}
    for name, co in externals.items():
        pats = set(co.patients.tolist())
        for other, op in seen.items():
            shared = sorted(pats & op)
            if shared:
                more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
                raise UserError(f"external cohort {name!r} shares {len(shared)} patient(s) with {other} "
                                f"({', '.join(map(str, shared[:3]))}{more}): an external cohort must hold other patients")
        seen[f"external cohort {name!r}"] = pats


def run_outer_fold(cohort: Cohort, externals: dict[str, Cohort], cfg: CVConfig, r: int, f: int,
                   tr: np.ndarray, te: np.ndarray) -> dict[str, Any]:
    seed = cfg.seed + 1000 * r + 100 * (f + 1)
    sub = cohort.subset(tr)
    (lr, wd), inner = select_hparams(sub, cfg, seed)
    model = fit(sub.features, sub.labels, cfg.train_config(lr, wd, seed))
    p_te, _ = predict(model, [cohort.features[i] for i in te], cfg.batch_size, cfg.device)
    ext = {name: predict(model, co.features, cfg.batch_size, cfg.device)[0].tolist()
           for name, co in externals.items()}
    return {"repeat": r, "fold": f, "lr": lr, "weight_decay": wd, "inner": inner,
            "test_idx": te.tolist(), "test_scores": p_te.tolist(), "external_scores": ext}


def nested_cv(cohort: Cohort, cfg: CVConfig, externals: dict[str, Cohort] | None = None,
              out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the nested CV (+ externals); return per-fold records and out-of-fold scores (cached in out_dir)."""
    externals = externals or {}
    check_cohorts(cohort, externals)
    y = cohort.labels
    cache = open_cache(out_dir, cache_key(cohort, externals, cfg)) if out_dir else None
    records = []
    jobs = [(r, f, tr, te) for r in range(cfg.repeats)
            for f, (tr, te) in enumerate(patient_folds(y, cohort.patients, cfg.folds, cfg.seed + r))]
    for r, f, tr, te in progress(jobs, desc=f"nested CV ({cfg.model})", unit="fold"):
        path = cache / f"r{r}_f{f}.json" if cache else None
        if path is not None and path.is_file():
            rec = json.loads(path.read_text())
        else:
            rec = run_outer_fold(cohort, externals, cfg, r, f, tr, te)
            if path is not None:
                atomic_write_json(path, rec)
        records.append(rec)
    return {"records": records, "cache": str(cache) if cache else None}


def summarise(cohort: Cohort, cfg: CVConfig, records: list[dict[str, Any]], externals: dict[str, Cohort],
              final_ext: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-fold and pooled metrics; external metrics of the fold ensemble and of the final model."""
    y, patients = cohort.labels, cohort.patients
    oof = np.full((cfg.repeats, len(y)), np.nan)
    folds = []
    for rec in records:
        te = np.asarray(rec["test_idx"], dtype=int)
        oof[rec["repeat"], te] = rec["test_scores"]
        m = binary_metrics(y[te], np.asarray(rec["test_scores"]), cfg.n_boot, cfg.seed, groups=patients[te])
        folds.append({k: rec[k] for k in ("repeat", "fold", "lr", "weight_decay", "inner")} | {"test": m})
    fold_aucs = [f["test"]["auc"] for f in folds if f["test"]["auc"] is not None]
    res: dict[str, Any] = {
        "folds": folds,
        # per repeat, then combined (mean AUC over repeats; CI from patient-level draws shared by the repeats)
        "cv_pooled": binary_metrics(y, oof, cfg.n_boot, cfg.seed, groups=patients),
        "cv_pooled_per_repeat": [binary_metrics(y, oof[r], cfg.n_boot, cfg.seed, groups=patients)
                                 for r in range(cfg.repeats)],
        "cv_fold_auc": {"mean": float(np.mean(fold_aucs)) if fold_aucs else float("nan"),
                        "sd": float(np.std(fold_aucs, ddof=1)) if len(fold_aucs) > 1 else 0.0,
                        "n": len(fold_aucs)},
        # each slide's out-of-fold score averaged over repeats: for the CSV and the ROC plot only
        "oof_scores": oof.mean(0).tolist(), "external": {},
    }
    for name, co in externals.items():
        ens = np.mean([rec["external_scores"][name] for rec in records], axis=0)
        res["external"][name] = {
            "n_slides": len(co),
            "ensemble": binary_metrics(co.labels, ens, cfg.n_boot, cfg.seed, groups=co.patients),
            "final_model": binary_metrics(co.labels, final_ext[name], cfg.n_boot, cfg.seed, groups=co.patients),
            "ensemble_scores": ens.tolist(), "final_scores": np.asarray(final_ext[name]).tolist(),
            "per_fold_auc": [_pooled_auc(co.labels, np.asarray(rec["external_scores"][name]))
                             for rec in records],
        }
    return res


def train_and_evaluate(cohort: Cohort, cfg: CVConfig, out_dir: str | Path,
                       externals: dict[str, Cohort] | None = None, sources: dict[str, str] | None = None,
                       ) -> dict[str, Any]:
    """The whole `mil train`: nested CV, externals, final model on all data, reports in `out_dir`."""
    from domainfm.core.config import config_to_dict
    from domainfm.pathology.mil.report import markdown, roc_png, write_predictions
    from domainfm.pathology.mil.store import provenance, save_mil_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    externals = externals or {}
    from domainfm.pathology.mil.store import check_same_encoder

    check_cohorts(cohort, externals)
    check_same_encoder({"the CV cohort": cohort.attrs, **{f"external cohort {n!r}": co.attrs
                                                         for n, co in externals.items()}})
    cv = nested_cv(cohort, cfg, externals, out)
    # final model: the same selection on all the data, then trained on all of it
    (lr, wd), inner = select_hparams(cohort, cfg, cfg.seed + 999_983)
    final = fit(cohort.features, cohort.labels, cfg.train_config(lr, wd, cfg.seed))
    final_ext = {name: predict(final, co.features, cfg.batch_size, cfg.device)[0] for name, co in externals.items()}
    prov = provenance(cohort.attrs)
    meta = {"train": config_to_dict(cfg), "selected": {"lr": lr, "weight_decay": wd, "inner": inner},
            "provenance": prov, "in_dim": cohort.in_dim, "n_slides": len(cohort), **(sources or {})}
    save_mil_model(final, out, cfg.model, meta)

    res = summarise(cohort, cfg, cv["records"], externals, final_ext)
    results = {"model": cfg.model, "features": (sources or {}).get("features", ""), "n_slides": len(cohort),
               "n_patients": int(len(np.unique(cohort.patients))), "n_positive": int(cohort.labels.sum()),
               "dropped": cohort.dropped, "train": config_to_dict(cfg), "provenance": prov,
               "final_model": {"lr": lr, "weight_decay": wd, "inner": inner}, **res}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    y = cohort.labels
    write_predictions(out / "predictions_cv.csv", [
        {"slide_id": s.slide_id, "patient_id": s.patient_id, "label": s.label, "score": round(p, 6)}
        for s, p in zip(cohort.slides, res["oof_scores"], strict=True)])
    roc_png({f"{cfg.model} CV (pooled)": (y, np.asarray(res["oof_scores"]))}, out / "roc_cv.png",
            f"{cfg.model}: cross-validation")
    for name, co in externals.items():
        e = res["external"][name]
        write_predictions(out / f"predictions_external_{name}.csv", [
            {"slide_id": s.slide_id, "patient_id": s.patient_id, "label": s.label,
             "score_ensemble": round(a, 6), "score_final": round(b, 6)}
            for s, a, b in zip(co.slides, e["ensemble_scores"], e["final_scores"], strict=True)])
        roc_png({"fold ensemble": (co.labels, np.asarray(e["ensemble_scores"])),
                 "final model": (co.labels, np.asarray(e["final_scores"]))},
                out / f"roc_external_{name}.png", f"{cfg.model}: external cohort {name}")
    return results
