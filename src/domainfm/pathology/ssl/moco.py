"""MoCo v2 (He et al. 2020; Chen et al. 2020): query encoder, momentum key encoder, queue, InfoNCE.

Shapes: images ``(B, 3, S, S)``; backbone features ``(B, W)`` (W = backbone width); projections
``(B, dim)`` (dim = 128), L2-normalised; queue ``(dim, K)``; logits ``(B, 1 + K)``.

Shuffled BatchNorm. Upstream MoCo shuffles the keys across GPUs so that BatchNorm statistics of a key
batch do not come from the same images as the query batch (otherwise the model "cheats" through the
batch statistics). On one device we get the same effect with `SplitBatchNorm2d`: each BN layer
normalises ``bn_splits`` sub-batches separately, exactly as ``bn_splits`` GPUs would, and the keys are
shuffled across sub-batches before the key encoder and un-shuffled after. Under torchrun DDP the upstream
cross-GPU shuffle is used (`bn_splits` then splits each GPU's share further, 1 by default).

DDP invariants (checked by tests/pathology/ssl/test_moco_ddp.py): the permutation of the cross-rank
shuffle is drawn from the caller's CPU generator (identical on every rank, checkpointed, so resume is
exact on GPU too) and broadcast from rank 0 as a guard; the queue is filled with the keys of the
*global* batch (all-gathered), so every rank holds the same queue without broadcasting it; the key
encoder follows the query encoder, whose parameters DDP keeps identical, so it stays identical too.
BN running statistics are each rank's own until `average_bn_stats` averages them (at checkpoints).
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over `num_splits` sub-batches (like that many GPUs, each with its own BN).

    Sub-batch j holds samples j, j + s, j + 2s, ... (a strided split: a free reshape, no copy)."""

    def __init__(self, num_features: int, num_splits: int, **kw) -> None:
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        b, c, h, w = x.shape
        if b % s:
            raise ValueError(f"batch {b} is not divisible by bn_splits={s}")
        # (B, C, H, W) -> (B/s, s*C, H, W): each sub-batch's channels become separate BN channels.
        # `reshape`, not `view`: a channels_last input (strides C*H*W, 1, W*C, C, as on the GPU path) cannot
        # merge its sample and channel axes without a copy, so it is copied once here and restored below.
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        mean_rep = self.running_mean.repeat(s)
        var_rep = self.running_var.repeat(s)
        out = F.batch_norm(x.reshape(b // s, c * s, h, w), mean_rep, var_rep, self.weight.repeat(s),
                           self.bias.repeat(s), True, self.momentum, self.eps)
        # each split updated its own copy of the running stats; keep their mean
        self.running_mean.copy_(mean_rep.view(s, c).mean(0))
        self.running_var.copy_(var_rep.view(s, c).mean(0))
        if self.num_batches_tracked is not None:
            self.num_batches_tracked += 1
        out = out.reshape(b, c, h, w)
        # hand the next layer the layout it was given (convolutions stay on their channels_last kernels)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a SplitBatchNorm2d with the same parameters and stats."""
    if num_splits <= 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            new = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_split_bn(child, num_splits)
    return module


def projection_head(width: int, dim: int = 128) -> nn.Module:
    """MoCo v2 MLP head: Linear(W, W) -> ReLU -> Linear(W, dim)."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: q, k (B, dim) normalised, queue (dim, K) -> mean cross-entropy with the positive at 0."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (B, 1)
    l_neg = q @ queue  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1 + K)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each rank -> (world * b, ...) on every rank (no gradient)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def average_bn_stats(module: nn.Module) -> None:
    """Replace every BatchNorm running mean / variance by its mean over the ranks (no-op on one process).

    Under DDP each rank's BN sees only its own (shuffled) share of the batch, so the running statistics
    drift apart; averaging them at checkpoints makes every rank's state identical and the saved encoder's
    statistics an estimate over the global batch (all ranks must call this at the same step)."""
    if not _distributed():
        return
    bufs = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None for b in (m.running_mean, m.running_var)]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])  # one collective instead of one per buffer
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    for b, v in zip(bufs, flat.split([b.numel() for b in bufs]), strict=True):
        b.copy_(v.view_as(b))


class MoCo(nn.Module):
    """MoCo v2 around any headless backbone ``(B, 3, S, S) -> (B, width)``."""

    def __init__(self, backbone: nn.Module, width: int, dim: int = 128, queue_size: int = 65536,
                 momentum: float = 0.999, temperature: float = 0.2, bn_splits: int = 1) -> None:
        super().__init__()
        self.queue_size, self.momentum, self.temperature, self.bn_splits = queue_size, momentum, temperature, bn_splits
        self.encoder_q = nn.Sequential(convert_split_bn(backbone, bn_splits), projection_head(width, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False  # the key encoder only follows the query encoder by momentum
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def backbone(self) -> nn.Module:
        return self.encoder_q[0]

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q (parameters only; BN stats are the key encoder's own)."""
        m = self.momentum
        pk = list(self.encoder_k.parameters())
        pq = [p.detach() for p in self.encoder_q.parameters()]
        if len(pk) != len(pq):  # pragma: no cover - the encoders are deep copies
            raise RuntimeError("query and key encoders differ")
        # two fused multi-tensor kernels instead of two small kernels per parameter
        torch._foreach_mul_(pk, m)
        torch._foreach_add_(pk, pq, alpha=1 - m)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write `keys` (n, dim) over the oldest entries of the ring buffer and advance the pointer."""
        keys = concat_all_gather(keys)
        n = keys.shape[0]
        if n > self.queue_size:  # only the newest queue_size keys can be kept
            keys, n = keys[-self.queue_size:], self.queue_size
        ptr = int(self.queue_ptr.item())
        idx = (ptr + torch.arange(n, device=keys.device)) % self.queue_size
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % self.queue_size

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Key projections with shuffled BN: permute, encode, un-permute -> (B, dim)."""
        if _distributed():
            return self._keys_ddp(im_k, generator)
        b = im_k.shape[0]
        perm = torch.randperm(b, generator=generator).to(im_k.device)
        k = F.normalize(self.encoder_k(im_k[perm]), dim=1)
        return k[torch.argsort(perm)]

    @torch.no_grad()
    def _keys_ddp(self, im_k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Upstream cross-GPU batch shuffle: gather, permute (rank 0's permutation), encode the local share.

        im_k (b, 3, S, S) per rank -> gathered (world * b, 3, S, S); rank r encodes rows perm[r*b:(r+1)*b]
        (its BN sees a mix of every rank's images), the keys are gathered back and un-permuted, and each
        rank keeps the keys of its own b images -> (b, dim)."""
        b = im_k.shape[0]
        gathered = concat_all_gather(im_k)
        world, rank = dist.get_world_size(), dist.get_rank()
        # CPU generator: the same draw on every rank and restorable from a checkpoint (a CUDA randperm
        # would use the device RNG, which the checkpoint does not hold)
        perm = torch.randperm(gathered.shape[0], generator=generator).to(im_k.device)
        dist.broadcast(perm, src=0)
        local = perm.view(world, b)[rank]
        k = F.normalize(self.encoder_k(gathered[local]), dim=1)
        all_k = concat_all_gather(k)  # (world * b, dim): row i is the key of gathered[perm[i]]
        unshuffled = torch.empty_like(all_k)
        unshuffled[perm] = all_k
        return unshuffled[rank * b:(rank + 1) * b]

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """One MoCo step's loss; also moves the key encoder and enqueues the new keys."""
        q = F.normalize(self.encoder_q(im_q), dim=1)  # (B, dim)
        with torch.no_grad():
            self.momentum_update()
            k = self._keys(im_k, generator)  # (B, dim)
        loss = info_nce(q, k, self.queue.clone().detach(), self.temperature)
        self.dequeue_and_enqueue(k)
        return loss
