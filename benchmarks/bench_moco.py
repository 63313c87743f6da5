"""MoCo v2 training throughput (ours vs lightly's building blocks) and feature-extraction throughput.

Same backbone (torchvision resnet18, random init), batch, image size, queue and device for both;
inputs are fixed random tensors so only the training step is timed (data loading is identical for
both and excluded). Each side runs `--repeats` timed windows of `--steps` steps after `--warmup`
steps, interleaved ours / lightly; we print the median images/s and the ratio.

The lightly side follows lightly's MoCo v2 example: MoCoProjectionHead, deepcopy momentum encoders,
`update_momentum`, `batch_shuffle` / `batch_unshuffle` for the keys, `NTXentLoss(memory_bank_size=...)`.

Extraction: ours (`embed_files`: DataLoader + batched inference) on real PCam JPEGs when
DOMAINFM_DATA is set, else on generated PNGs.

    .venv/bin/python benchmarks/bench_moco.py --batch-size 64 --image-size 64 --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn


def ours_step_fn(args: argparse.Namespace):  # noqa: ANN201
    from domainfm.pathology.features.encoders import build_backbone
    from domainfm.pathology.ssl.moco import MoCo
    from domainfm.pathology.ssl.train import auto_bn_splits

    torch.manual_seed(0)
    backbone, width = build_backbone(args.backbone)
    model = MoCo(backbone, width, queue_size=args.queue_size, bn_splits=auto_bn_splits(args.batch_size, 0)).to(args.device)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step(xq: torch.Tensor, xk: torch.Tensor) -> float:
        loss = model(xq, xk, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def lightly_step_fn(args: argparse.Namespace):  # noqa: ANN201
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum

    torch.manual_seed(0)
    resnet = torchvision.models.get_model(args.backbone, weights=None)
    width = resnet.fc.in_features
    resnet.fc = nn.Identity()

    class LightlyMoCo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = resnet
            self.projection_head = MoCoProjectionHead(width, width, 128)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

        def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
            return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    model = LightlyMoCo().to(args.device)
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(args.queue_size, 128))
    opt = torch.optim.SGD(list(model.backbone.parameters()) + list(model.projection_head.parameters()), lr=0.03,
                          momentum=0.9, weight_decay=1e-4)

    def step(xq: torch.Tensor, xk: torch.Tensor) -> float:
        update_momentum(model.backbone, model.backbone_momentum, m=0.999)
        update_momentum(model.projection_head, model.projection_head_momentum, m=0.999)
        query = model(xq)
        with torch.no_grad():
            xk_s, shuffle = batch_shuffle(xk)
            key = batch_unshuffle(model.forward_momentum(xk_s), shuffle)
        loss = criterion(query, key)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_training(args: argparse.Namespace) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    xq, xk = torch.randn(shape, generator=g).to(args.device), torch.randn(shape, generator=g).to(args.device)
    steps = {"ours": ours_step_fn(args), "lightly": lightly_step_fn(args)}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn(xq, xk)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn(xq, xk)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()} | {f"{k}_all": v for k, v in rates.items()}


def time_extraction(args: argparse.Namespace) -> dict[str, float]:
    from domainfm.pathology.features.encoders import load_encoder
    from domainfm.pathology.features.extract import embed_files

    data = os.environ.get("DOMAINFM_DATA")
    pcam = Path(data) / "pathology" / "pcam" / "valid" if data else None
    tmp = None
    if pcam is not None and pcam.is_dir():
        files = sorted(pcam.rglob("*.jpg"))[: args.extract_images]
        source = f"PCam valid JPEGs ({len(files)})"
    else:
        from PIL import Image

        tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.extract_images):
            p = Path(tmp.name) / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(p)
            files.append(p)
        source = f"generated 96px PNGs ({len(files)})"
    enc = load_encoder(args.backbone, device=args.device, image_size=args.image_size)
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        embed_files(enc.model, files, enc.transform, batch_size=128, device=args.device,
                    num_workers=args.workers, desc="extract")
        rates.append(len(files) / (time.perf_counter() - t0))
    if tmp is not None:
        tmp.cleanup()
    return {"median": statistics.median(rates), "all": rates, "source": source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--queue-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extract-images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={torch.get_num_threads()} backbone={args.backbone} "
          f"batch={args.batch_size} image={args.image_size}px queue={args.queue_size} "
          f"steps={args.steps}x{args.repeats} (median of repeats)")
    tr = time_training(args)
    print(f"MoCo v2 training  ours    {tr['ours']:8.1f} img/s   runs {[round(x, 1) for x in tr['ours_all']]}")
    print(f"MoCo v2 training  lightly {tr['lightly']:8.1f} img/s   runs {[round(x, 1) for x in tr['lightly_all']]}")
    print(f"ratio ours / lightly: {tr['ours'] / tr['lightly']:.2f}x")
    ex = time_extraction(args)
    print(f"feature extraction ours {ex['median']:8.1f} img/s on {ex['source']} "
          f"(runs {[round(x, 1) for x in ex['all']]})")


if __name__ == "__main__":
    main()
