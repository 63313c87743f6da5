"""Regenerate the PCam-bags MIL table: each aggregator x each encoder, CV AUC and external AUC (95% CI).

One command from the raw PCam folders and an encoder folder (defaults = the README table)::

    python benchmarks/mil_table.py --pcam $DOMAINFM_DATA/pathology/pcam \
        --encoder runs/moco_pcam -o runs/mil_table

For every encoder (the given one, the same backbone randomly initialised, and `--imagenet FILE` when a
local ImageNet weights file exists): `domainfm pathology extract --images` on PCam `train` and
`valid` -> `domainfm pathology bags` (CV cohort from train, external cohort from valid) -> nested
CV (`domainfm.pathology.mil.cv.train_and_evaluate`, the code behind `domainfm pathology mil train`)
for every aggregator. Every step is skipped when its output exists and was made with the same
parameters (a key file beside it; other parameters are refused, never reused; the CV caches each fold
under a key of every parameter), so a killed run resumes. Each split is reduced before extraction to about what the bags can use (seeded
subsets; symlinks, nothing copied), which cuts
the extraction time without changing the bags' composition rules (defaults: 7,000 normal + 1,200
tumour train patches, all 1,500 normal + 500 tumour valid patches).
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


def reuse(path: Path, key_file: Path, key: dict) -> bool:
    """True if `path` exists and was made with `key`; refuses one made with other (or unknown) parameters."""
    from domainfm.pathology.features.probe import check_cache_key

    if not path.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(key, sort_keys=True))  # before the output: a killed run leaves no output
        return False
    try:
        check_cache_key(path, key_file, json.loads(json.dumps(key, sort_keys=True)))
    except Exception as exc:  # UserError: one line, no traceback
        raise SystemExit(str(exc)) from None
    return True


def reduced_split(split_dir: Path, out: Path, n_normal: int, n_tumour: int, seed: int) -> Path:
    """An ImageFolder of symlinks to a seeded subset of a PCam split (0 = all of a class)."""
    key = {"split": str(split_dir.resolve()), "n_normal": n_normal, "n_tumour": n_tumour, "seed": seed}
    if reuse(out / ".done", out.with_name(out.name + ".key.json"), key):
        return out
    rng = np.random.default_rng(seed)
    for cls, n in (("0", n_normal), ("1", n_tumour)):
        files = sorted((split_dir / cls).glob("*.jpg"))
        if n and n < len(files):
            files = [files[i] for i in np.sort(rng.permutation(len(files))[:n])]
        (out / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = out / cls / f.name
            if not link.exists():
                os.symlink(f.resolve(), link)
    (out / ".done").write_text("ok\n")
    return out


def encoders(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    """name -> (encoder spec for `extract --encoder`, input size; 0 = the encoder's own)."""
    enc: dict[str, tuple[str, int]] = {}
    cfg_path = Path(args.encoder) / "config.json" if args.encoder else None
    cfg = json.loads(cfg_path.read_text()) if cfg_path and cfg_path.is_file() else {}
    if args.encoder and not cfg:
        print(f"note: {args.encoder} is not an encoder folder (yet): MoCo rows skipped", flush=True)
    size = int(cfg.get("image_size", args.image_size))
    if cfg:
        enc["moco"] = (str(args.encoder), 0)
    enc["random-init"] = (cfg.get("arch", args.arch), size)  # same backbone, same input size
    if args.imagenet:
        enc["imagenet"] = (str(args.imagenet), size)
    return enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pcam", type=Path, default=Path(os.environ.get("DOMAINFM_DATA", ".")) / "pathology" / "pcam")
    ap.add_argument("--encoder", type=Path, default=None, help="MoCo encoder folder (from `pretrain`)")
    ap.add_argument("--image-size", type=int, default=96, help="input size of the random-init baseline "
                    "when there is no MoCo config to copy it from")
    ap.add_argument("--arch", default="resnet18", help="random-init architecture when the folder has no config")
    ap.add_argument("--imagenet", type=Path, default=None, help="local ImageNet weights file (optional)")
    ap.add_argument("-o", "--out", type=Path, default=Path("runs/mil_table"))
    ap.add_argument("--models", default="meanpool,maxpool,chowder,abmil,dsmil,clam-sb",
                    help="aggregators (transmil: add it on a GPU, it costs seconds per bag step on a CPU)")
    ap.add_argument("--n-bags", type=int, default=160)
    ap.add_argument("--ext-bags", type=int, default=36)
    ap.add_argument("--bag-size", type=int, default=40)
    ap.add_argument("--positive-fraction", type=float, nargs=2, default=(0.01, 0.25))
    ap.add_argument("--train-normal", type=int, default=7000, help="normal train patches to extract (0: all)")
    ap.add_argument("--train-tumour", type=int, default=1200, help="tumour train patches to extract (0: all)")
    ap.add_argument("--valid-tumour", type=int, default=500, help="tumour valid patches to extract (0: all)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner-folds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", nargs=3, action="append", default=[], metavar=("ENCODER", "TRAIN_H5", "VALID_H5"),
                    help="reuse feature files already extracted for an encoder (moco, random-init, imagenet): "
                    "skips its extraction (e.g. the files `domainfm pathology probe` wrote)")
    ap.add_argument("--batch-size", type=int, default=128, help="extraction batch size")
    ap.add_argument("--workers", type=int, default=1, help="extraction DataLoader workers")
    args = ap.parse_args()

    import torch

    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.data import load_cohort
    from domainfm.pathology.mil.report import fmt_auc

    out = args.out
    threads = torch.get_num_threads()
    train_dir = reduced_split(args.pcam / "train", out / "pcam_train_subset", args.train_normal,
                              args.train_tumour, args.seed)
    valid_dir = reduced_split(args.pcam / "valid", out / "pcam_valid_subset", 0, args.valid_tumour, args.seed)
    table, timings = [], {}
    given = {name: {"train": Path(tr), "valid": Path(va)} for name, tr, va in args.features}
    for enc_name, (enc, size) in encoders(args).items():
        t0 = time.perf_counter()
        fdir = out / "features" / enc_name
        files = given.get(enc_name) or {split: fdir / split / "features.h5" for split in ("train", "valid")}
        for split, folder in (("train", train_dir), ("valid", valid_dir)):
            key = {"encoder": enc, "image_size": size, "images": str(folder.resolve())}
            if enc_name not in given and not reuse(files[split], fdir / f"{split}.key.json", key):
                torch.set_num_threads(threads)
                run(["pathology", "extract", "--encoder", enc, "--images", str(folder), "-o", str(fdir / split),
                     "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", "cpu"]
                    + (["--image-size", str(size)] if size else []))
        torch.set_num_threads(1)  # MIL models are tiny: one thread is fastest
        timings[f"{enc_name}/extract_s"] = round(time.perf_counter() - t0, 1)
        bdir = out / "bags" / enc_name
        lo, hi = (str(v) for v in args.positive_fraction)
        for split, n, prefix, seed in (("train", args.n_bags, "cv", args.seed), ("valid", args.ext_bags, "ext",
                                                                                   args.seed + 1)):
            # always rebuilt (deterministic, seconds); `bags` refuses a folder built with other parameters
            run(["pathology", "bags", str(files[split]), "-o", str(bdir / split),
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
    budget = {"extract_threads": threads, "mil_threads": 1, "timings_s": timings, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps({"rows": table, "budget": budget}, indent=1, default=str))
    print("\n" + md)
    print(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
