"""MoCo v2 pretraining loop: CPU, one GPU, or torchrun DDP; atomic checkpoints; exact resume.

Outputs under ``cfg.output``: ``model.safetensors`` + ``config.json`` (the encoder, loadable with
`domainfm.pathology.load_encoder`), ``pretrain_config.yaml``, ``checkpoints/last.pt``,
``history.json`` (loss per step, kNN per epoch), ``loss_curve.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from domainfm.core.config import config_to_dict, save_config
from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_json
from domainfm.core.progress import get_logger, progress
from domainfm.pathology.ssl.augment import AugmentConfig, augment_config
from domainfm.pathology.ssl.config import MocoConfig
from domainfm.pathology.ssl.data import TileCache, build_tile_cache, find_images
from domainfm.pathology.ssl.loader import ViewPrefetcher
from domainfm.pathology.ssl.moco import MoCo, average_bn_stats

log = get_logger("pathology.ssl")


def resolve(cfg: MocoConfig) -> MocoConfig:
    """Fill the automatic fields (device, backbone) and check the values."""
    if not cfg.tiles:
        raise UserError("give the tiles folder (domainfm pathology pretrain TILES -o ENCODER)")
    if not cfg.output:
        raise UserError("give the encoder folder to write with -o/--output")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")
    backbone = cfg.backbone or ("resnet50" if device.startswith("cuda") else "resnet18")
    if cfg.batch_size < 2:
        raise UserError("--batch-size must be at least 2")
    if cfg.max_steps <= 0 and cfg.epochs <= 0 and cfg.max_minutes <= 0:
        raise UserError("give --max-steps N, --epochs N or --max-minutes M")
    if cfg.max_minutes < 0:
        raise UserError("--max-minutes must be positive")
    aug_of(cfg)  # an unknown --augment preset is a one-line error before any work
    if cfg.queue_size < cfg.batch_size:
        raise UserError(f"--queue-size {cfg.queue_size} is smaller than the batch ({cfg.batch_size})")
    return replace(cfg, device=device, backbone=backbone)


def auto_bn_splits(batch_size: int, requested: int) -> int:
    """Sub-batches for SplitBatchNorm: `requested`, or ~32 images each (upstream's per-GPU batch), at least 2."""
    if requested > 0:
        if batch_size % requested:
            raise UserError(f"--bn-splits {requested} does not divide --batch-size {batch_size}")
        return requested
    if batch_size < 16:
        return 1
    # at least two sub-batches: with one, query and key batches share BN statistics (the MoCo "cheat")
    target = max(2, batch_size // 32)
    divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0 and batch_size // d >= 2]
    return min(divisors, key=lambda d: abs(d - target))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 over `total` steps (MoCo v2's cosine schedule, per step)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * t))


def aug_of(cfg: MocoConfig) -> AugmentConfig:
    """The augmentation of this run: the `--augment` preset with the single-field overrides applied."""
    s = cfg.color_jitter
    jitter = {} if s is None else {"brightness": s, "contrast": s, "saturation": s, "hue": s / 4}
    return augment_config(
        cfg.augment, cfg.image_size, **jitter, grayscale_p=cfg.grayscale_p, blur_p=cfg.blur_p,
        hed_jitter=cfg.hed_jitter, rot90=cfg.rot90,
        vflip_p=None if cfg.vflip is None else (0.5 if cfg.vflip else 0.0),
        crop_scale=None if cfg.crop_scale_min is None else (cfg.crop_scale_min, 1.0))


class StepPlanner:
    """Plans the total number of steps of a `--max-minutes` run from the measured step time.

    The first steps calibrate (the first one, with its one-off allocations, is not counted); from then on
    ``total = step + remaining_seconds / step_seconds`` is re-planned at every step from a running mean of
    recent step times, so the cosine schedule (a function of step / total) reaches its end value at the
    budget even when the machine's speed drifts. With `max_steps` as well, the smaller total wins."""

    def __init__(self, budget_s: float, cap: int = 0, calibration: int = 3) -> None:
        self.budget_s, self.cap, self.calibration = budget_s, cap, calibration
        self.times: list[float] = []

    def plan(self, step: int, seconds: float, last_step_s: float | None, current: int) -> int:
        if last_step_s is not None:
            self.times.append(last_step_s)
        remaining = self.budget_s - seconds
        if remaining <= 0:
            return step  # out of time: this is the last step
        usable = self.times[1:] if len(self.times) > 1 else self.times
        if len(usable) < self.calibration - 1 or not usable:
            total = max(current, step + 1)  # still calibrating: keep the provisional plan
        else:
            recent = usable[-20:]
            per_step = sum(recent) / len(recent)
            total = step + max(1, int(remaining / per_step))
        return min(total, self.cap) if self.cap else total


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def build_model(cfg: MocoConfig, world: int = 1) -> tuple[MoCo, int]:
    from domainfm.pathology.features.encoders import build_backbone

    torch.manual_seed(cfg.seed)
    backbone, width = build_backbone(cfg.backbone)
    # under DDP the cross-rank shuffle does upstream's job; --bn-splits may still split each rank's share
    if world == 1 or cfg.bn_splits > 0:
        splits = auto_bn_splits(cfg.batch_size, cfg.bn_splits)
    else:
        splits = 1
    model = MoCo(backbone, width, dim=cfg.dim, queue_size=cfg.queue_size, momentum=cfg.momentum,
                 temperature=cfg.temperature, bn_splits=splits)
    return model, width


def _save_checkpoint(path: Path, model: MoCo, opt: torch.optim.Optimizer, state: dict[str, Any],
                     gen: torch.Generator) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def plot_history(history: dict[str, Any], path: Path) -> None:
    """Loss per step (and kNN accuracy per epoch, when monitored) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    loss = np.asarray(history["loss"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(loss) + 1), loss, lw=0.6, alpha=0.5, label="loss")
    if len(loss) >= 20:
        w = max(5, len(loss) // 50)
        ax.plot(np.arange(w, len(loss) + 1), np.convolve(loss, np.ones(w) / w, mode="valid"), lw=1.5,
                label=f"loss (mean of {w})")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    if history.get("knn"):
        ax2 = ax.twinx()
        steps = [h["step"] for h in history["knn"]]
        ax2.plot(steps, [h["accuracy"] for h in history["knn"]], "o-", color="C3", label="kNN accuracy")
        ax2.set_ylabel("kNN accuracy")
    ax.legend(loc="upper right")
    ax.set_title("MoCo v2 pretraining")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def knn_monitor(backbone: torch.nn.Module, cfg: MocoConfig, device: str) -> dict[str, float]:
    """Leave-one-out weighted kNN accuracy (k=20) of the backbone's features on the labelled val folder."""
    import numpy as np

    from domainfm.pathology.features.encoders import make_transform
    from domainfm.pathology.features.extract import embed_files, list_image_folder
    from domainfm.pathology.features.probe import knn_loo_accuracy

    files, labels, _ = list_image_folder(cfg.val_dir)
    if len(files) > cfg.val_max:
        keep = np.sort(np.random.default_rng(0).permutation(len(files))[:cfg.val_max])
        files, labels = [files[i] for i in keep], labels[keep]
    was_training = backbone.training
    feats, ok = embed_files(backbone, files, make_transform(cfg.image_size), batch_size=cfg.batch_size,
                            device=device, num_workers=0, desc="kNN monitor")
    backbone.train(was_training)
    return {"accuracy": knn_loo_accuracy(feats[ok], labels[ok], k=20), "n": int(ok.sum())}


@dataclass
class PretrainRun:
    """What `run_pretrain` leaves behind: the encoder folder, the trained MoCo module and the loop state."""

    output: Path
    model: MoCo
    state: dict[str, Any]
    rank: int = 0
    world: int = 1


def pretrain(cfg: MocoConfig, stop_at_step: int | None = None) -> Path:
    """Train MoCo v2 on `cfg.tiles`, write the encoder to `cfg.output`; returns that folder.

    `stop_at_step` ends this session early after a checkpoint (as a kill would; the tests use it);
    rerunning with ``resume=True`` continues exactly where it stopped."""
    return run_pretrain(cfg, stop_at_step).output


def _init_distributed(device: str, local_rank: int) -> tuple[str, bool]:
    """Join the torchrun process group (nccl on GPUs, gloo on CPU) -> (this rank's device, owns_group).

    A group the caller already initialised is used as is (and left for the caller to destroy)."""
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, False
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device, True


def _global_mean(x: torch.Tensor, distributed: bool) -> float:
    """The loss averaged over the ranks (what one process with the global batch would report)."""
    if distributed:
        import torch.distributed as dist

        x = x.detach().clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return float(x)


def _wrap_ddp(model: MoCo, device: str) -> Any:
    """DDP over the query encoder's gradients; parameters and buffers synced from rank 0 once, at wrap time.

    No per-step buffer broadcast: the queue is identical on every rank by construction (global keys), so
    re-sending its 128 x K floats every step (upstream's default) is wasted traffic; BN statistics are
    averaged at checkpoints instead (`average_bn_stats`)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    kw: dict[str, Any] = {"device_ids": [torch.device(device).index] if device.startswith("cuda") else None}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kw["forward_sync_buffers"] = False  # torch >= 2.14 name; still syncs once at init
    else:  # pragma: no cover - older torch
        kw["broadcast_buffers"] = False
    return DistributedDataParallel(model, **kw)


def run_pretrain(cfg: MocoConfig, stop_at_step: int | None = None) -> PretrainRun:
    """`pretrain`, returning the trained module and state too (the DDP test compares ranks with it).

    Under torchrun (WORLD_SIZE > 1) every rank runs this; the batch is per rank, lr follows the global
    batch (0.03 x batch x world / 256), rank 0 alone writes checkpoints and the encoder."""
    cfg = resolve(cfg)
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    device, owns_group = _init_distributed(cfg.device, local_rank) if distributed else (cfg.device, False)
    try:
        return _train(cfg, stop_at_step, rank, world, device, distributed)
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: MocoConfig, stop_at_step: int | None, rank: int, world: int, device: str,
           distributed: bool) -> PretrainRun:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output)
    ckpt_path = out / "checkpoints" / "last.pt"
    if ckpt_path.exists() and not cfg.resume:
        raise UserError(f"{out} already holds a run (checkpoints/last.pt); pass --resume to continue it "
                        "or choose another --output")
    files = find_images(cfg.tiles)
    # every rank builds / opens the same cache (rank 0 first under DDP, so the tiles are decoded once)
    cache = _open_cache(cfg, files, rank, distributed)
    n = len(cache)
    global_batch = cfg.batch_size * world
    steps_per_epoch = n // global_batch
    if steps_per_epoch == 0:
        raise UserError(f"{n} images is fewer than one batch of {global_batch}"
                        + (f" ({cfg.batch_size} per rank x {world} ranks)" if distributed else ""))
    by_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    planner = StepPlanner(cfg.max_minutes * 60, cap=by_steps) if cfg.max_minutes > 0 else None
    total = by_steps if planner is None else (by_steps or 10**9)  # provisional until calibrated
    if cfg.queue_size > n and rank == 0:
        log.warning("queue (%d) is larger than the data set (%d images): the queue will hold stale copies "
                    "of the current images; consider --queue-size <= %d", cfg.queue_size, n, n)

    model, width = build_model(cfg, world)
    model.to(device)
    channels_last = device.startswith("cuda") if cfg.channels_last is None else cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    base_lr = cfg.lr or 0.03 * global_batch / 256  # MoCo's rule on the global batch (all ranks together)
    # foreach: multi-tensor kernels on the CPU too (torch picks them by default on CUDA only)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=base_lr, momentum=cfg.sgd_momentum,
                          weight_decay=cfg.weight_decay, foreach=True)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # shuffled-BN permutations (the same on every rank)
    state: dict[str, Any] = {"step": 0, "total": total, "loss": [], "lr": [], "knn": [], "images_seen": 0,
                             "seconds": 0.0, "world": world, "base_lr": base_lr}
    if ckpt_path.exists():
        # on the CPU: the RNG states must stay CPU tensors; load_state_dict moves weights and optimiser
        # state to the parameters' device
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        state.setdefault("lr", [])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if rank == 0 and state.get("world", 1) != world:
            log.warning("resuming a run made with %d process(es) on %d: the global batch, lr and data order "
                        "change from here on", state.get("world", 1), world)
        state["world"], state["base_lr"] = world, base_lr
        if planner is not None:
            total = state["total"]  # re-planned from this session's step times
        elif state["total"] != total:
            if rank == 0:
                log.warning("resuming with %d total steps instead of %d: the cosine schedule changes", total,
                            state["total"])
            state["total"] = total
        if rank == 0:
            log.info("resumed from step %d / %d", state["step"], state["total"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "pretrain_config.yaml")
    net: Any = model
    if distributed:
        net = _wrap_ddp(model, device)
    aug = aug_of(cfg)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    model.train()
    bar = progress(total=None if planner else total, initial=state["step"], desc="MoCo v2", unit="step",
                   disable=rank != 0)
    t_session = time.perf_counter()
    seconds_at_start = state["seconds"]
    last_ckpt_s = state["seconds"]
    interrupted = False
    last_step_s: float | None = None
    views = ViewPrefetcher(cache, aug, cfg.batch_size, cfg.seed, device, rank, world,
                           torch.channels_last if channels_last else torch.contiguous_format)
    while not interrupted:
        step = state["step"]
        if planner is not None:  # every rank plans from rank 0's clock: the same total everywhere
            total = _broadcast_int(planner.plan(step, state["seconds"], last_step_s, state["total"]), distributed)
            state["total"] = total
        if step >= state["total"]:
            break
        t0 = time.perf_counter()
        epoch = step // steps_per_epoch
        # two views from one generator seeded by (seed, epoch, rank, batch), prepared one step ahead on a
        # background thread: a resumed run draws the same batches
        im_q, im_k = views.get(step, prefetch_next=step + 1 < state["total"])
        lr = lr_at(step, state["total"], base_lr, cfg.warmup_steps)
        for grp in opt.param_groups:
            grp["lr"] = lr
        if amp is not None:
            with amp:
                loss = net(im_q, im_k, generator=gen)
        else:
            loss = net(im_q, im_k, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = _global_mean(loss.detach(), distributed)  # same value on every rank (and a device sync)
        if not math.isfinite(loss_v):
            raise RuntimeError(f"loss became {loss_v} at step {step}; lower --lr")
        last_step_s = time.perf_counter() - t0
        state["step"] += 1
        state["loss"].append(loss_v)
        state["lr"].append(lr)
        state["images_seen"] += global_batch
        state["seconds"] = seconds_at_start + time.perf_counter() - t_session
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.3f}", img_s=f"{global_batch / max(last_step_s, 1e-9):.0f}", lr=f"{lr:.4f}")
        done = state["step"] >= state["total"] or (planner is not None and state["seconds"] >= planner.budget_s)
        if done and planner is not None:
            state["total"] = state["step"]
        interrupted = stop_at_step is not None and state["step"] >= stop_at_step and not done
        # the same decision on every rank: average_bn_stats is a collective
        due = _broadcast_int(int(state["seconds"] - last_ckpt_s >= cfg.checkpoint_minutes * 60), distributed)
        if state["step"] % cfg.checkpoint_every == 0 or done or interrupted or due:
            average_bn_stats(model)
            if rank == 0:
                _save_checkpoint(ckpt_path, model, opt, state, gen)
            last_ckpt_s = state["seconds"]
        epoch_done = state["step"] % steps_per_epoch == 0 or done
        if cfg.val_dir and epoch_done and not interrupted:
            average_bn_stats(model)
            if rank == 0:
                res = knn_monitor(model.backbone, cfg, device)
                state["knn"].append({"step": state["step"], "epoch": epoch + 1, **res})
                log.info("epoch %d: kNN accuracy %.4f on %d val images", epoch + 1, res["accuracy"], res["n"])
                _save_checkpoint(ckpt_path, model, opt, state, gen)
        if done:
            break
    views.close()
    bar.close()
    if rank == 0 and not interrupted:
        _finish(model, cfg, width, state, cache.files, out, world, aug)
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # nobody leaves (or resumes) before rank 0 has written the checkpoint / encoder
    return PretrainRun(output=out, model=model, state=state, rank=rank, world=world)


def _open_cache(cfg: MocoConfig, files: list[Path], rank: int, distributed: bool) -> TileCache:
    """The decoded-tile cache of `files` (built on first use; under DDP rank 0 builds, the others wait)."""
    if distributed and rank != 0:
        import torch.distributed as dist

        dist.barrier()
        return build_tile_cache(files, cfg.cache_dir or None, cfg.cache_size, cfg.workers)
    cache = build_tile_cache(files, cfg.cache_dir or None, cfg.cache_size, cfg.workers)
    if rank == 0:
        log.info("tile cache %s: %d tiles of %d px (%s)", cache.path, len(cache), cache.array.shape[1],
                 "decoded now" if cache.built else "reused")
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return cache


def _broadcast_int(x: int, distributed: bool) -> int:
    """Rank 0's value of `x` on every rank (time-based decisions must agree across ranks)."""
    if not distributed:
        return x
    import torch.distributed as dist

    # nccl moves only CUDA tensors
    dev = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([x], dtype=torch.long, device=dev)
    dist.broadcast(t, src=0)
    return int(t)


def _finish(model: MoCo, cfg: MocoConfig, width: int, state: dict[str, Any], files: list[str], out: Path,
            world: int = 1, aug: AugmentConfig | None = None) -> None:
    from domainfm.pathology.features.encoders import save_encoder

    seconds = state["seconds"]
    extra = {"name": out.name, "method": "moco_v2", "steps": state["step"], "images_seen": state["images_seen"],
             "train_seconds": round(seconds, 1), "n_train_images": len(files),
             "final_loss": float(sum(state["loss"][-20:]) / max(1, len(state["loss"][-20:]))),
             "world_size": world, "global_batch": cfg.batch_size * world, "base_lr": state.get("base_lr"),
             "final_lr": state["lr"][-1] if state.get("lr") else None, "max_minutes": cfg.max_minutes,
             "augmentation_preset": aug.preset if aug else cfg.augment,
             "augmentation": aug.to_dict() if aug else None, "pretrain": config_to_dict(cfg)}
    save_encoder(model.backbone, out, arch=cfg.backbone, embed_dim=width, image_size=cfg.image_size, extra=extra)
    atomic_write_json(out / "history.json", {"loss": state["loss"], "lr": state.get("lr", []), "knn": state["knn"]})
    try:
        plot_history(state, out / "loss_curve.png")
    except ImportError as exc:  # matplotlib is optional (e.g. a bare GPU machine): the history.json stays
        log.warning("loss curve not drawn (%s)", exc)
    log.info("encoder written to %s (%d steps, %.0f images/s)", out, state["step"],
             state["images_seen"] / max(seconds, 1e-9))
    print(json.dumps({"encoder": str(out), "steps": state["step"], "final_loss": round(extra["final_loss"], 4),
                      "seconds": round(seconds, 1)}))
