"""Regenerate the PCam-bags MIL table: each aggregator x each encoder, CV AUC and external AUC (95% CI).

One command from the raw PCam folders and an encoder folder::

    python benchmarks/mil_table.py --pcam $DOMAINFM_DATA/pathology/pcam \
        --encoder /work/artifacts/moco_pcam -o runs/mil_table

For every encoder (the given one, the same backbone randomly initialised, and `--imagenet FILE` when a
local ImageNet weights file exists): `domainfm pathology extract --images` on PCam `train` and
`valid` -> `domainfm pathology bags` (CV cohort from train, external cohort from valid) -> nested
CV (`domainfm.pathology.mil.cv.train_and_evaluate`, the code behind `domainfm pathology mil train`)
for every aggregator. Every step is skipped when its output exists (the CV caches each fold), so a
killed run resumes. The train split is reduced before extraction to what the bags can use (all
normal patches + `--train-tumour` tumour patches, seeded; symlinks, nothing copied), which halves
the extraction time without changing the bags' composition rules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from domainfm.cli import main as cli  # noqa: E402


def run(argv: list[str]) -> None:
    print("$ domainfm " + " ".join(argv), flush=True)
    rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): domainfm {' '.join(argv)}")


def reduced_train(pcam_train: Path, out: Path, n_tumour: int, seed: int) -> Path:
    """An ImageFolder of symlinks: every class-0 patch and a seeded subset of class-1 patches."""
    if (out / ".done").exists():
        return out
    rng = np.random.default_rng(seed)
    for cls in ("0", "1"):
        files = sorted((pcam_train / cls).glob("*.jpg"))
        if cls == "1":
            files = [files[i] for i in np.sort(rng.permutation(len(files))[:n_tumour])]
        (out / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = out / cls / f.name
            if not link.exists():
                os.symlink(f.resolve(), link)
    (out / ".done").write_text("ok\n")
    return out


def encoders(args: argparse.Namespace) -> dict[str, str]:
    enc = {"moco": str(args.encoder)}
    cfg_path = Path(args.encoder) / "config.json"
    arch = json.loads(cfg_path.read_text()).get("arch", "resnet18") if cfg_path.is_file() else args.arch
    enc["random-init"] = arch
    if args.imagenet:
        enc["imagenet"] = str(args.imagenet)
    return enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pcam", type=Path, default=Path(os.environ.get("DOMAINFM_DATA", ".")) / "pathology" / "pcam")
    ap.add_argument("--encoder", type=Path, required=True, help="MoCo encoder folder (from `pretrain`)")
    ap.add_argument("--arch", default="resnet18", help="random-init architecture when the folder has no config")
    ap.add_argument("--imagenet", type=Path, default=None, help="local ImageNet weights file (optional)")
    ap.add_argument("-o", "--out", type=Path, default=Path("runs/mil_table"))
    ap.add_argument("--models", default="meanpool,maxpool,chowder,abmil,dsmil")
    ap.add_argument("--n-bags", type=int, default=200)
    ap.add_argument("--ext-bags", type=int, default=36)
    ap.add_argument("--bag-size", type=int, default=40)
    ap.add_argument("--positive-fraction", type=float, nargs=2, default=(0.01, 0.25))
    ap.add_argument("--train-tumour", type=int, default=2000, help="tumour patches of train to extract")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner-folds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128, help="extraction batch size")
    ap.add_argument("--workers", type=int, default=1, help="extraction DataLoader workers")
    args = ap.parse_args()

    import torch

    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.data import load_cohort
    from domainfm.pathology.mil.report import fmt_auc

    out = args.out
    train_dir = reduced_train(args.pcam / "train", out / "pcam_train_subset", args.train_tumour, args.seed)
    table, timings = [], {}
    for enc_name, enc in encoders(args).items():
        t0 = time.perf_counter()
        fdir = out / "features" / enc_name
        for split, folder in (("train", train_dir), ("valid", args.pcam / "valid")):
            if not (fdir / split / "features.h5").is_file():
                run(["pathology", "extract", "--encoder", enc, "--images", str(folder), "-o", str(fdir / split),
                     "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", "cpu"])
        timings[f"{enc_name}/extract_s"] = round(time.perf_counter() - t0, 1)
        bdir = out / "bags" / enc_name
        lo, hi = (str(v) for v in args.positive_fraction)
        for split, n, prefix, seed in (("train", args.n_bags, "cv", args.seed), ("valid", args.ext_bags, "ext",
                                                                                   args.seed + 1)):
            if not (bdir / split / "labels.csv").is_file():
                run(["pathology", "bags", str(fdir / split / "features.h5"), "-o", str(bdir / split),
                     "--n-bags", str(n), "--bag-size", str(args.bag_size), "--positive-fraction", lo, hi,
                     "--seed", str(seed), "--prefix", prefix, "--cohort", split, "--patch-mpp", "0.972"])
        cohort = load_cohort(bdir / "train", bdir / "train" / "labels.csv")
        ext = load_cohort(bdir / "valid", bdir / "valid" / "labels.csv")
        for model in args.models.split(","):
            t1 = time.perf_counter()
            cfg = CVConfig(model=model, epochs=args.epochs, folds=args.folds, inner_folds=args.inner_folds,
                           repeats=args.repeats, seed=args.seed)
            res = train_and_evaluate(cohort, cfg, out / "mil" / enc_name / model, {"valid": ext},
                                     {"features": str(bdir / "train")})
            timings[f"{enc_name}/{model}_s"] = round(time.perf_counter() - t1, 1)
            e = res["external"]["valid"]
            table.append({"encoder": enc_name, "encoder_name": res["provenance"].get("encoder"), "model": model,
                          "cv": res["cv_pooled"], "cv_fold_auc": res["cv_fold_auc"], "external": e["ensemble"],
                          "external_final": e["final_model"]})
            print(f"{enc_name:>12} {model:<9} CV {fmt_auc(res['cv_pooled'])}  external {fmt_auc(e['ensemble'])}",
                  flush=True)
    lines = ["| encoder | aggregator | CV AUC [95% CI] | external AUC [95% CI] (fold ensemble) | "
             "external AUC (final model) |", "|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['encoder']} | {r['model']} | {fmt_auc(r['cv'])} | {fmt_auc(r['external'])} | "
                     f"{fmt_auc(r['external_final'])} |")
    md = "\n".join(lines) + "\n"
    budget = {"torch_threads": torch.get_num_threads(), "timings_s": timings, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps({"rows": table, "budget": budget}, indent=1, default=str))
    print("\n" + md)
    print(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
