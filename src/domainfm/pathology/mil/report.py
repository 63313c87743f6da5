"""Results of a MIL run: a Markdown table, ROC curve PNGs, and prediction CSVs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.io import atomic_path


def fmt_auc(m: dict[str, Any] | None) -> str:
    """'0.953 [0.912, 0.985]' or 'n/a'."""
    if not m or m.get("auc") is None:
        return "n/a"
    lo, hi = m["auc_ci"]
    return f"{m['auc']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# MIL results: {results['model']}", "",
             f"features: `{results['features']}` ({results['n_slides']} slides, {results['n_patients']} patients)",
             f"encoder: `{results.get('provenance', {}).get('encoder', 'unknown')}`", "",
             "| split | n | AUC [95% CI] | accuracy | balanced acc. | lr | wd |",
             "|---|---|---|---|---|---|---|"]
    for f in results["folds"]:
        m = f["test"]
        lines.append(f"| repeat {f['repeat']} fold {f['fold']} | {m['n']} | {fmt_auc(m)} | {m['accuracy']:.3f} | "
                     f"{m['balanced_accuracy']:.3f} | {f['lr']:g} | {f['weight_decay']:g} |")
    p = results["cv_pooled"]
    lines.append(f"| **CV pooled** | {p['n']} | **{fmt_auc(p)}** | {p['accuracy']:.3f} | "
                 f"{p['balanced_accuracy']:.3f} | | |")
    fa = results["cv_fold_auc"]
    n_rep = len(results.get("cv_pooled_per_repeat", [])) or 1
    lines += ["", f"fold AUC mean ± sd: {fa['mean']:.3f} ± {fa['sd']:.3f} over {fa['n']} folds",
              f"CIs: 95% percentile bootstrap over {'patients' if p.get('ci') == 'patient bootstrap' else 'slides'}"
              + (f"; CV pooled = mean of {n_rep} repeats' pooled AUCs, combined per bootstrap draw" if n_rep > 1 else "")]
    for name, ext in results.get("external", {}).items():
        for kind in ("ensemble", "final_model"):
            m = ext[kind]
            lines.append(f"external `{name}` ({kind.replace('_', ' ')}, n={m['n']}): AUC {fmt_auc(m)}, "
                         f"accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}")
    fm = results.get("final_model", {})
    if fm:
        lines += ["", f"final model: trained on all {results['n_slides']} slides with lr={fm['lr']:g}, "
                  f"wd={fm['weight_decay']:g}, {results['train']['epochs']} epochs"]
    return "\n".join(lines) + "\n"


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> None:
    """One ROC plot with a curve per entry (name -> (labels, scores))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from domainfm.core.metrics import roc_auc

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    for name, (y, s) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_predictions(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
