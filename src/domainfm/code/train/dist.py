"""Devices, precision and multi-process set-up (DDP, FSDP2) for `pretrain`.

`torchrun --nproc-per-node N` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; we read them and pick
NCCL on GPUs, gloo on CPUs. Without them the run is a single process and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from domainfm.core.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (if any) and choose this process's device."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    if world > 1 and dev.type == "cpu":
        # two processes on a small CPU machine must not both grab every core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def autocast_dtype(dtype: str, device: Any) -> Any:
    """bf16 on GPUs, full fp32 on CPUs unless asked (CPU bf16 autocast is slower on most CPUs)."""
    import torch

    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[dtype]


def autocast(device: Any, dtype: Any) -> contextlib.AbstractContextManager:
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def all_mean(values: list[float], info: DistInfo) -> list[float]:
    """Average a few floats over processes (for logging); identity in a single process."""
    if not info.distributed:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def wrap_model(model: Any, info: DistInfo, fsdp: bool, init_from: Any = None, from_checkpoint: bool = False) -> Any:
    """DDP (replicated weights) or FSDP2 (`fully_shard` per decoder layer, then the root).

    FSDP: `model` may live on the `meta` device (no memory): it is sharded first, each process then
    allocates only its shards and receives their values from rank 0's `init_from` (a full model or state
    dict on CPU, None on the other ranks) — so no process ever holds the whole model on its device, and
    the initial weights are bit-identical to a single process's. `from_checkpoint`: the shards are only
    allocated (`materialize`); their values come next from a sharded checkpoint, rank 0 builds nothing.
    """
    if not info.distributed:
        if fsdp:
            raise UserError("--fsdp needs several processes: launch with torchrun --nproc-per-node N")
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in _decoder_layers(model):
            fully_shard(layer)
        fully_shard(model)
        if from_checkpoint:
            materialize(model, info.device)
        elif init_from is not None or not info.is_main:
            load_full_state(model, info, init_from)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def materialize(model: Any, device: Any) -> None:
    """Allocate a `meta` (possibly sharded) model on `device` and fill the buffers no checkpoint holds.

    Parameters and persistent buffers are left uninitialised (a checkpoint load follows). Non-persistent
    buffers (RoPE `inv_freq`) are recomputed from the config by transformers' own `_init_weights`, on
    every rank locally — bit-identical to a CPU-built model's, with no broadcast and no full model anywhere.
    """
    model.to_empty(device=device)
    for module in model.modules():
        if module._non_persistent_buffers_set:
            model._init_weights(module)


def load_full_state(model: Any, info: DistInfo, source: Any) -> None:
    """Fill an FSDP2-sharded (possibly `meta`) model from rank 0's full weights (collective).

    `source` on rank 0: a full `nn.Module` or state dict on CPU; ignored on the other ranks. Parameters
    and persistent buffers go through `set_model_state_dict(broadcast_from_rank0=True)` (each rank keeps
    its shard); non-persistent buffers (RoPE `inv_freq`, not in any state dict) are broadcast as they are.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers()):
        model.to_empty(device=info.device)
    src_buffers: dict[str, Any] = {}
    full: dict[str, Any] = {}
    if info.is_main:
        if isinstance(source, torch.nn.Module):
            src_buffers = dict(source.named_buffers())
            full = source.state_dict()
        else:
            full = dict(source)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for name, buf in model.named_buffers():  # same order on every rank
            if info.is_main and name in src_buffers:
                buf.copy_(src_buffers[name])
            dist.broadcast(buf, src=0)


def _decoder_layers(model: Any) -> list[Any]:
    base = model.base_model
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise UserError(f"FSDP: cannot find the decoder layers of {type(model).__name__}")
    return list(layers)


def replicas_in_sync(model: Any, info: DistInfo) -> bool:
    """True when every process holds bit-identical parameters (DDP sanity check; FSDP is sharded)."""
    if not info.distributed:
        return True
    import torch
    import torch.distributed as dist

    # one checksum per tensor: sum and a position-weighted sum catch a permutation as well as a drift
    sums = []
    for p in model.parameters():
        x = p.detach().double().flatten()
        w = torch.arange(1, x.numel() + 1, dtype=torch.float64, device=x.device)
        sums.append(torch.stack([x.sum(), (x * w).sum()]))
    local = torch.cat(sums)
    gathered = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def unsharded_model(mcfg: Any, full_sd: dict[str, Any]) -> Any:
    """A plain (not FSDP-wrapped) model holding `full_sd` (gathered weights, on CPU) for `save_pretrained`.

    Built on the `meta` device and filled with `assign=True`, so no second copy of the weights is made.
    """
    from domainfm.code.model.build import build_model

    model = build_model(mcfg, device="meta")
    model.load_state_dict(full_sd, assign=True)
    model.tie_weights()  # `assign` replaced the tied lm_head parameter by its own copy: share it again
    return model
