"""The pathology thesis run: MoCo v2 on PCam train for a time budget, linear probe, PCam-bags MIL table.

    python benchmarks/thesis_pathology.py --budget-min 120 -o runs/thesis          # the measured run
    python benchmarks/thesis_pathology.py --smoke -o /tmp/thesis_smoke              # ~1-3 minutes
    python benchmarks/thesis_pathology.py ... --baseline-encoder ~/weights/resnet18-f37072d3.pth

Steps (every one resumable: kill -9 and rerun the same command to continue):
1. `domainfm pathology pretrain` (MoCo v2, `--max-minutes BUDGET`, `--resume`) on `PCAM/train` (labels
   ignored). CPU choice, documented in docs/ssl_features.md: resnet18 at 64 px (PCam's 96 px patches
   downscaled: 0.44x the FLOPs of 96 px, and the probe AUC of 64 vs 96 px inputs is within noise at our
   scale), batch 64 (2 BN splits of 32, as upstream per GPU), queue 8,192 (< the 20,000 training tiles, so
   the queue never holds stale copies of the current batch), the `histology` augmentation preset, lr
   0.03 x 64 / 256 with the cosine schedule planned to end with the budget. On a GPU: resnet50, 96 px,
   batch 256.
2. Linear probe (and kNN) on PCam valid for MoCo, the same backbone randomly initialised, and
   `--baseline-encoder FILE` (local weights, e.g. torchvision's ImageNet resnet18; nothing is downloaded).
3. PCam-bags: bags of tiles from the probe's train features (CV cohort) and valid features (external
   cohort), every aggregator x every encoder: nested CV AUC and external AUC with bootstrap 95% CIs
   (`domainfm.pathology.mil.cv.train_and_evaluate`, the code behind `domainfm pathology mil train`).
Writes OUT/summary.json and OUT/table.md. `run(Namespace)` is also called by scripts/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PCAM_MPP = 0.972  # PCam patches: 96 px cut at 10x from Camelyon16 slides


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pcam", type=Path, default=None, help="PCam folder with train/ and valid/ "
                    "(default: $DOMAINFM_DATA/pathology/pcam)")
    ap.add_argument("-o", "--out", type=Path, default=Path("runs/thesis_pathology"))
    ap.add_argument("--budget-min", type=float, default=120.0, help="MoCo wall-clock budget in minutes")
    ap.add_argument("--device", default="", help="cpu / cuda (default: cuda if available)")
    ap.add_argument("--backbone", default="", help="default resnet18 on CPU, resnet50 on GPU")
    ap.add_argument("--image-size", type=int, default=0, help="default 64 on CPU, 96 on GPU")
    ap.add_argument("--batch-size", type=int, default=0, help="default 64 on CPU, 256 on GPU")
    ap.add_argument("--queue-size", type=int, default=8192)
    ap.add_argument("--augment", default="histology")
    ap.add_argument("--baseline-encoder", default="", help="local weights file (e.g. ImageNet) to compare too")
    ap.add_argument("--probe-train-per-class", type=int, default=4000, help="probe/bag train tiles per class")
    ap.add_argument("--probe-test-per-class", type=int, default=0, help="valid tiles per class (0 = all 1,500)")
    ap.add_argument("--models", default="meanpool,maxpool,chowder,abmil,dsmil")
    ap.add_argument("--n-bags", type=int, default=100, help="CV bags; 100 x 40 tiles fit the 4,000 tiles per class of the probe")
    ap.add_argument("--ext-bags", type=int, default=36)
    ap.add_argument("--bag-size", type=int, default=40)
    ap.add_argument("--positive-fraction", type=float, nargs=2, default=(0.01, 0.25))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--inner-folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1, help="extraction DataLoader workers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny configuration of the same path (minutes)")
    return ap


def smoke_args(args: argparse.Namespace) -> argparse.Namespace:
    """The same path at a size that runs in a minute or two on 2 CPU cores."""
    args.budget_min = min(args.budget_min, 0.3)
    args.backbone, args.image_size, args.batch_size = args.backbone or "resnet18", args.image_size or 32, \
        args.batch_size or 16
    args.queue_size = min(args.queue_size, 256)
    args.probe_train_per_class, args.probe_test_per_class = min(args.probe_train_per_class, 160), 60
    args.models = ",".join(args.models.split(",")[:2])
    args.n_bags, args.ext_bags, args.bag_size = 16, 8, 8
    args.folds, args.inner_folds, args.epochs, args.n_boot = 2, 0, 3, 50
    args.workers = 0
    return args


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    if not args.device:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device.startswith("cuda")
    args.backbone = args.backbone or ("resnet50" if gpu else "resnet18")
    args.image_size = args.image_size or (96 if gpu else 64)
    args.batch_size = args.batch_size or (256 if gpu else 64)
    if args.pcam is None:
        data = os.environ.get("DOMAINFM_DATA")
        if not data:
            raise SystemExit("set DOMAINFM_DATA or pass --pcam")
        args.pcam = Path(data) / "pathology" / "pcam"
    for split in ("train", "valid"):
        if not (args.pcam / split).is_dir():
            raise SystemExit(f"{args.pcam / split}: not found (PCam ImageFolder with train/ and valid/)")
    return args


def pretrain_step(args: argparse.Namespace) -> Path:
    from domainfm.pathology.ssl.config import MocoConfig
    from domainfm.pathology.ssl.train import pretrain

    enc = args.out / "moco"
    if (enc / "model.safetensors").is_file():
        print(f"[1/3] MoCo encoder exists: {enc}", flush=True)
        return enc
    print(f"[1/3] MoCo v2 on {args.pcam / 'train'} for {args.budget_min} min ({args.backbone}, "
          f"{args.image_size} px, batch {args.batch_size}, queue {args.queue_size}, {args.augment})", flush=True)
    cfg = MocoConfig(tiles=str(args.pcam / "train"), output=str(enc), backbone=args.backbone,
                     image_size=args.image_size, batch_size=args.batch_size, queue_size=args.queue_size,
                     max_minutes=args.budget_min, augment=args.augment, device=args.device, resume=True,
                     checkpoint_every=100, checkpoint_minutes=1.0, seed=args.seed,
                     cache_dir=str(args.out / "tile_cache"))
    return pretrain(cfg)


def probe_step(args: argparse.Namespace, enc: Path) -> dict[str, Any]:
    from domainfm.pathology.features.probe import ProbeConfig, run_probe

    encoders = [str(enc), args.backbone] + ([args.baseline_encoder] if args.baseline_encoder else [])
    out = args.out / "probe"
    print(f"[2/3] linear probe on PCam valid: {', '.join(encoders)}", flush=True)
    cfg = ProbeConfig(train=str(args.pcam / "train"), test=str(args.pcam / "valid"), encoder=encoders,
                      output=str(out), image_size=0, max_train_per_class=args.probe_train_per_class,
                      max_test_per_class=args.probe_test_per_class, embedding="none", batch_size=128,
                      workers=args.workers, device=args.device, seed=args.seed)
    return run_probe(cfg)  # features are cached per encoder, so a rerun re-extracts nothing


def _label(name: str, spec: str, enc: Path, args: argparse.Namespace) -> str:
    if Path(spec) == enc or name == enc.name:
        return "moco"
    if spec == args.baseline_encoder:
        return "baseline"
    return "random-init"


def bags_step(args: argparse.Namespace, probe: dict[str, Any], enc: Path) -> list[dict[str, Any]]:
    import torch

    from domainfm.pathology.mil.bags import BagsConfig, build_bags
    from domainfm.pathology.mil.cv import CVConfig, train_and_evaluate
    from domainfm.pathology.mil.data import load_cohort

    print(f"[3/3] PCam-bags: {args.models} x {len(probe['encoders'])} encoders", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MIL models are tiny: one thread is fastest
    rows = []
    lo, hi = args.positive_fraction
    specs = [str(enc), args.backbone] + ([args.baseline_encoder] if args.baseline_encoder else [])
    for (name, res), spec in zip(probe["encoders"].items(), specs, strict=False):
        label = _label(name, spec, enc, args)
        bdir = args.out / "bags" / label
        for split, n, prefix, seed in (("train", args.n_bags, "cv", args.seed), ("test", args.ext_bags, "ext",
                                                                                   args.seed + 1)):
            if not (bdir / split / "labels.csv").is_file():
                build_bags(res["features"][split], bdir / split, BagsConfig(
                    n_bags=n, bag_size=args.bag_size, positive_fraction=(lo, hi), seed=seed, prefix=prefix,
                    cohort="train" if split == "train" else "valid", patch_mpp=PCAM_MPP))
        cohort = load_cohort(bdir / "train", bdir / "train" / "labels.csv")
        ext = load_cohort(bdir / "test", bdir / "test" / "labels.csv")
        for model in args.models.split(","):
            cfg = CVConfig(model=model, epochs=args.epochs, folds=args.folds, inner_folds=args.inner_folds,
                           n_boot=args.n_boot, seed=args.seed)
            t0 = time.perf_counter()
            res_cv = train_and_evaluate(cohort, cfg, args.out / "mil" / label / model, {"valid": ext},
                                        {"features": str(bdir / "train")})
            e = res_cv["external"]["valid"]
            rows.append({"encoder": label, "encoder_name": name, "model": model, "cv": res_cv["cv_pooled"],
                         "external": e["ensemble"], "seconds": round(time.perf_counter() - t0, 1)})
    torch.set_num_threads(threads)
    return rows


def _auc(m: dict[str, Any] | None) -> float | None:
    return None if not m or m.get("auc") is None else float(m["auc"])


def table_md(probe: dict[str, Any], rows: list[dict[str, Any]], probe_labels: dict[str, str]) -> str:
    from domainfm.pathology.mil.report import fmt_auc

    lines = ["| encoder | linear probe AUC (PCam valid) | kNN AUC |", "|---|---|---|"]
    for name, r in probe["encoders"].items():
        lines.append(f"| {probe_labels[name]} ({name}) | {r['linear']['auc']:.4f} | {r['knn']['auc']:.4f} |")
    lines += ["", "| aggregator | encoder | CV AUC [95% CI] | external AUC [95% CI] | external minus "
              "random init |", "|---|---|---|---|---|"]
    rand = {r["model"]: _auc(r["external"]) for r in rows if r["encoder"] == "random-init"}
    for r in sorted(rows, key=lambda r: (r["model"], r["encoder"])):
        e, base = _auc(r["external"]), rand.get(r["model"])
        delta = "" if e is None or base is None or r["encoder"] == "random-init" else f"{e - base:+.3f}"
        lines.append(f"| {r['model']} | {r['encoder']} | {fmt_auc(r['cv'])} | {fmt_auc(r['external'])} | {delta} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The three steps; returns (and writes) the summary."""
    import platform

    import torch

    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    args = _defaults(smoke_args(args) if args.smoke else args)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc = pretrain_step(args)
    t_pre = time.perf_counter() - t0
    probe = probe_step(args, enc)
    specs = [str(enc), args.backbone] + ([args.baseline_encoder] if args.baseline_encoder else [])
    labels = {name: _label(name, spec, enc, args) for name, spec in zip(probe["encoders"], specs, strict=False)}
    rows = bags_step(args, probe, enc)
    md = table_md(probe, rows, labels)
    meta = json.loads((enc / "config.json").read_text())
    summary = {
        "command": " ".join(sys.argv), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                   "torch_threads": torch.get_num_threads(),
                                                   "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
                                                   "device": args.device},
        "pretrain": {k: meta.get(k) for k in ("steps", "images_seen", "train_seconds", "final_loss", "base_lr",
                                              "final_lr", "augmentation_preset", "arch", "image_size")},
        "probe": {labels[n]: {"linear_auc": r["linear"]["auc"], "knn_auc": r["knn"]["auc"]}
                  for n, r in probe["encoders"].items()},
        "bags": rows, "seconds": {"pretrain_session": round(t_pre, 1), "total": round(time.perf_counter() - t0, 1)},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.out / "table.md").write_text(md)
    print("\n" + md, flush=True)
    return summary


def main() -> None:
    from domainfm.core.errors import UserError

    try:
        run(parser().parse_args())
    except UserError as e:  # a user error is one line and a non-zero exit, as in the CLI
        sys.exit(f"thesis_pathology: error: {e}")


if __name__ == "__main__":
    main()
