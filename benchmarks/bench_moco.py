"""MoCo v2 training throughput, ours vs lightly on identical work: the step alone and end to end.

Identical work on both sides: the same backbone (torchvision resnet18 by default, random init), image size,
batch, queue, MLP head, temperature, SGD settings, and split BatchNorm with the same number of splits
(ours: `SplitBatchNorm2d`; lightly: its own `lightly.models.batchnorm.SplitBatchNorm`, swapped into the
backbone), keys shuffled before the key encoder on both sides.

1. **Step alone**: fixed random input tensors, only the training step is timed (forward q, momentum update,
   shuffled key forward, loss, backward, SGD). Ours runs in the layout `pretrain` picks (channels_last on
   CUDA, NCHW on CPU, where it measured faster); the other layout is printed as well. lightly runs NCHW
   (its SplitBatchNorm calls `.view` and cannot take a channels_last tensor).
2. **End to end**, from the tile files on disk to an optimizer step, each side as its users run it:
   lightly = `MoCoV2Transform` (PIL, per image) in a torchvision `ImageFolder` + `DataLoader` with
   `--lightly-workers` worker processes; ours = what `domainfm pathology pretrain` does: the decoded-tile
   cache (built once and reused across epochs and runs; its one-off build time is printed separately),
   batched per-sample augmentations (`augment_batch`, the `mocov2` preset = lightly's MoCoV2Transform
   values, blur sigmas scaled to the crop size on both sides).

Repeats are interleaved (ours, lightly, ours, lightly, ...) after warm-up steps; medians are printed with
every repeat. Beside wall-clock images/s, images per CPU-second (this process's threads plus live
DataLoader workers, via psutil) are printed: on a shared machine they measure each side's work
independently of the share of the cores the scheduler grants. The achieved GFLOP/s of each side (FLOPs of one step counted by `torch.utils.flop_counter`,
identical for both) is printed beside the convolution peak measured in the same run (the best of a few
resnet-shaped 3x3 convolutions, forward, on the same threads).

    DOMAINFM_DATA=... .venv/bin/python benchmarks/bench_moco.py --batch-size 64 --image-size 64 --steps 4 \\
        --repeats 3 --tiles 2048
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


def swap_in_lightly_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Every BatchNorm2d -> lightly's SplitBatchNorm with the same parameters (what lightly's users do)."""
    from lightly.models.batchnorm import SplitBatchNorm

    if splits <= 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            new = SplitBatchNorm(child.num_features, splits)
            new.weight.data.copy_(child.weight.data)
            new.bias.data.copy_(child.bias.data)
            setattr(module, name, new)
        else:
            swap_in_lightly_split_bn(child, splits)
    return module


def ours_step_fn(args: argparse.Namespace, channels_last: bool | None = None):  # noqa: ANN201
    from domainfm.pathology.features.encoders import build_backbone
    from domainfm.pathology.ssl.moco import MoCo
    from domainfm.pathology.ssl.train import auto_bn_splits

    if channels_last is None:  # what `pretrain` does: channels_last on CUDA, NCHW on CPU (measured)
        channels_last = args.device.startswith("cuda")
    torch.manual_seed(0)
    backbone, width = build_backbone(args.backbone)
    model = MoCo(backbone, width, queue_size=args.queue_size, bn_splits=auto_bn_splits(args.batch_size, 0)).to(args.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4, foreach=True)
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step(xq: torch.Tensor, xk: torch.Tensor) -> float:
        loss = model(xq.contiguous(memory_format=fmt), xk.contiguous(memory_format=fmt), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def lightly_step_fn(args: argparse.Namespace):  # noqa: ANN201
    """lightly's MoCo v2 example (MoCoProjectionHead, update_momentum, batch_shuffle, NTXentLoss with a
    memory bank) with lightly's SplitBatchNorm in the backbone."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum

    from domainfm.pathology.ssl.train import auto_bn_splits

    torch.manual_seed(0)
    resnet = torchvision.models.get_model(args.backbone, weights=None)
    width = resnet.fc.in_features
    resnet.fc = nn.Identity()
    swap_in_lightly_split_bn(resnet, auto_bn_splits(args.batch_size, 0))

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


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live children (DataLoader workers).

    On a shared machine wall-clock rates measure the load as much as the code; CPU seconds per image
    measure the work each side does, whatever share of the cores the scheduler gives it."""
    total = time.process_time()
    try:
        import psutil
    except ImportError:  # pragma: no cover - children then go uncounted (said in the output)
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_flops(args: argparse.Namespace) -> float:
    """FLOPs of one MoCo step (query forward + backward, key forward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    fn = ours_step_fn(args, channels_last=False)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    with FlopCounterMode(display=False) as fc:
        fn(x, x.clone())
    return float(fc.get_total_flops())


def conv_peak(device: str, reps: int = 5) -> float:
    """Best forward GFLOP/s over a few resnet-shaped 3x3 convolutions (float32, both memory layouts)."""
    best = 0.0
    shapes = ((64, 64, 32), (64, 128, 16), (64, 256, 8))
    for (n, c, hw), fmt in ((s, f) for s in shapes for f in (torch.channels_last, torch.contiguous_format)):
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).to(memory_format=fmt)
        x = torch.randn(n, c, hw, hw, device=device).contiguous(memory_format=fmt)
        flops = 2.0 * n * c * c * 9 * hw * hw
        with torch.no_grad():
            conv(x)
            for _ in range(reps):
                _sync(device)
                t0 = time.perf_counter()
                conv(x)
                _sync(device)
                best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def time_step_alone(args: argparse.Namespace) -> dict[str, list[float]]:
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    xq, xk = torch.randn(shape, generator=g).to(args.device), torch.randn(shape, generator=g).to(args.device)
    steps = {"ours": ours_step_fn(args), "lightly": lightly_step_fn(args)}
    if not getattr(args, "skip_other_layout", False):
        steps["ours_other"] = ours_step_fn(args, channels_last=not args.device.startswith("cuda"))
    for fn in steps.values():
        for _ in range(args.warmup):
            fn(xq, xk)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            _sync(args.device)
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in range(args.steps):
                fn(xq, xk)
            _sync(args.device)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t0))
            rates.setdefault(f"{name}_cpu", []).append(args.steps * args.batch_size / max(cpu_seconds() - c0, 1e-9))
    return rates


def tile_files(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[Path], str]:
    """An ImageFolder of `--tiles` tiles: symlinks to PCam train JPEGs, else generated 96 px JPEGs."""
    from PIL import Image

    data = os.environ.get("DOMAINFM_DATA")
    pcam = Path(data) / "pathology" / "pcam" / "train" if data else None
    root = tmp / "tiles" / "0"
    root.mkdir(parents=True)
    if pcam is not None and pcam.is_dir():
        src = sorted(pcam.rglob("*.jpg"))
        pick = np.sort(np.random.default_rng(0).permutation(len(src))[: args.tiles])
        for i in pick:
            os.symlink(src[i], root / f"{src[i].parent.name}_{src[i].name}")
        what = f"PCam train JPEGs, 96 px ({len(pick)})"
    else:
        rng = np.random.default_rng(0)
        for i in range(args.tiles):
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
        what = f"generated 96 px JPEGs ({args.tiles})"
    return tmp / "tiles", sorted(root.iterdir()), what


def ours_e2e(args: argparse.Namespace, files: list[Path], cache_dir: Path):  # noqa: ANN201
    """`pretrain`'s inner loop: views from the tile cache prepared one step ahead (`ViewPrefetcher`), one step."""
    from domainfm.pathology.ssl.augment import augment_config
    from domainfm.pathology.ssl.data import build_tile_cache
    from domainfm.pathology.ssl.loader import ViewPrefetcher

    t0 = time.perf_counter()
    cache = build_tile_cache(files, cache_dir)
    build_s = time.perf_counter() - t0
    step = ours_step_fn(args)
    views = ViewPrefetcher(cache, augment_config("mocov2", args.image_size), args.batch_size, 0, args.device)
    state = {"step": 0}

    def one() -> None:
        step(*views.get(state["step"]))
        state["step"] += 1

    return one, build_s


def lightly_e2e(args: argparse.Namespace, root: Path):  # noqa: ANN201
    """lightly's way: MoCoV2Transform in an ImageFolder, a shuffling DataLoader with worker processes."""
    import torchvision
    from lightly.transforms import MoCoV2Transform

    scale = args.image_size / 224  # the same blur relative to the crop as ours
    transform = MoCoV2Transform(input_size=args.image_size, sigmas=(0.1 * scale, 2.0 * scale))
    ds = torchvision.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.lightly_workers,
                                         persistent_workers=args.lightly_workers > 0)
    step = lightly_step_fn(args)
    it = {"it": iter(loader)}

    def one() -> None:
        try:
            (x0, x1), _ = next(it["it"])
        except StopIteration:
            it["it"] = iter(loader)
            (x0, x1), _ = next(it["it"])
        step(x0.to(args.device), x1.to(args.device))

    return one


def time_end_to_end(args: argparse.Namespace) -> dict:
    tmp = tempfile.TemporaryDirectory()
    root, files, what = tile_files(args, Path(tmp.name))
    ours, build_s = ours_e2e(args, files, Path(tmp.name) / "cache")
    sides = {"ours": ours, "lightly": lightly_e2e(args, root)}
    for fn in sides.values():
        for _ in range(args.warmup):
            fn()
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            _sync(args.device)
            t0, c0 = time.perf_counter(), cpu_seconds()
            for _ in range(args.steps):
                fn()
            _sync(args.device)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t0))
            rates.setdefault(f"{name}_cpu", []).append(args.steps * args.batch_size / max(cpu_seconds() - c0, 1e-9))
    tmp.cleanup()
    return {"rates": rates, "cache_build_s": build_s, "source": what, "n": len(files)}


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


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.1f} img/s  (repeats {[round(x, 1) for x in xs]})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--queue-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=4, help="steps per timed window")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=2048, help="tile files for the end-to-end comparison")
    ap.add_argument("--lightly-workers", type=int, default=2, help="lightly's DataLoader worker processes")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: step, e2e, extract")
    ap.add_argument("--extract-images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=1, help="extraction DataLoader workers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"device={args.device} threads={torch.get_num_threads()} cpus={os.cpu_count()} "
          f"load_avg={load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} backbone={args.backbone} batch={args.batch_size} "
          f"image={args.image_size}px queue={args.queue_size} steps={args.steps} x {args.repeats} interleaved "
          f"repeats (medians)")
    flops = step_flops(args)
    peak = conv_peak(args.device)
    print(f"one step = {flops / 1e9:.1f} GFLOP (FlopCounterMode); conv peak measured now: {peak:.1f} GFLOP/s")

    def gflops(rate: float) -> str:
        g = rate / args.batch_size * flops / 1e9
        return f"{g:6.1f} GFLOP/s ({100 * g / peak:4.1f}% of conv peak)"

    if "step" not in skip:
        st = time_step_alone(args)
        med = {k: statistics.median(v) for k, v in st.items()}
        print("-- step alone (random tensors in memory)")
        cl = args.device.startswith("cuda")
        print(f"ours ({'channels_last' if cl else 'NCHW'}, default) {_fmt(st['ours'])}  {gflops(med['ours'])}")
        print(f"ours ({'NCHW' if cl else 'channels_last'})       {_fmt(st['ours_other'])}  {gflops(med['ours_other'])}")
        print(f"lightly (SplitBatchNorm){_fmt(st['lightly'])}  {gflops(med['lightly'])}")
        print(f"ratio ours / lightly, step alone: {med['ours'] / med['lightly']:.2f}x wall-clock; "
              f"{med['ours_cpu'] / med['lightly_cpu']:.2f}x per CPU-second (ours {med['ours_cpu']:.2f}, lightly "
              f"{med['lightly_cpu']:.2f} img per CPU-s)")
    if "e2e" not in skip:
        e2e = time_end_to_end(args)
        r = e2e["rates"]
        med = {k: statistics.median(v) for k, v in r.items()}
        print(f"-- end to end from tile files ({e2e['source']}) to an optimizer step")
        print(f"ours (tile cache + batched aug) {_fmt(r['ours'])}  {gflops(med['ours'])}")
        print(f"lightly (MoCoV2Transform + DataLoader, {args.lightly_workers} workers) {_fmt(r['lightly'])}  "
              f"{gflops(med['lightly'])}")
        print(f"ratio ours / lightly, end to end: {med['ours'] / med['lightly']:.2f}x wall-clock; "
              f"{med['ours_cpu'] / med['lightly_cpu']:.2f}x per CPU-second incl. DataLoader workers (ours "
              f"{med['ours_cpu']:.2f}, lightly {med['lightly_cpu']:.2f} img per CPU-s)")
        print(f"ours' one-off cache build: {e2e['cache_build_s']:.1f} s for {e2e['n']} tiles "
              f"({e2e['n'] / max(e2e['cache_build_s'], 1e-9):.0f} tiles/s; reused by later epochs and runs)")
    if "extract" not in skip and args.extract_images > 0:
        ex = time_extraction(args)
        print(f"feature extraction ours {ex['median']:8.1f} img/s on {ex['source']} "
              f"(runs {[round(x, 1) for x in ex['all']]})")


if __name__ == "__main__":
    main()
