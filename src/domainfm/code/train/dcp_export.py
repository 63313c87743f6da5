"""`final/` from a sharded checkpoint without the whole model in memory: DCP folder -> safetensors shards.

An offline conversion (`domainfm code export-checkpoint`, also what `pretrain --fsdp` runs on rank 0 at
the end): no process group, no GPU, any number of training processes. The weights are read a group at a
time — `dcp.load` of only those keys reads only their byte ranges of the `.distcp` files and stitches each
tensor from the chunks the ranks wrote — and each group is written as one safetensors file of at most
`max_shard_bytes` (transformers' sharded layout: ``model-00001-of-0000N.safetensors`` + an index
``model.safetensors.index.json``, or a single ``model.safetensors``). Peak memory is therefore about
two output shards (the tensors + safetensors' serialised copy), not the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domainfm.code.train.sharded import MODEL_KEY, single_process_ok
from domainfm.core.errors import UserError

SAFE_WEIGHTS_NAME = "model.safetensors"  # transformers' file names (`transformers.utils`)
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 1024**3


def checkpoint_tensors(ckpt: str | Path, key: str = MODEL_KEY) -> dict[str, Any]:
    """{name: DCP `TensorStorageMetadata` (global size, dtype, chunks)} of the tensors under `key`
    ("model": FQNs; "optim": ``state.FQN.exp_avg`` ...) of a sharded checkpoint."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(ckpt)).read_metadata()
    prefix = key + "."
    return {k[len(prefix):]: v for k, v in meta.state_dict_metadata.items()
            if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}


def export_names(model: Any) -> list[str]:
    """State-dict names `save_pretrained` writes: each tensor once (a tied `lm_head.weight` is dropped,
    it is the embedding), in the model's order. `model` may live on `meta`."""
    seen: set[int] = set()
    names = []
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            names.append(name)
    return names


def plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    """Consecutive groups of names of at most `max_bytes` (a bigger tensor gets a group of its own)."""
    groups: list[list[str]] = [[]]
    used = 0
    for name, n in sizes.items():
        if groups[-1] and used + n > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += n
    return [g for g in groups if g]


def write_safetensors(ckpt: str | Path, dest: Path, names: list[str],
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[str]:
    """Stream the model tensors `names` of DCP folder `ckpt` into safetensors file(s) in `dest`."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    meta = checkpoint_tensors(ckpt)
    missing = [n for n in names if n not in meta]
    if missing:
        raise UserError(f"{ckpt}: the checkpoint lacks {len(missing)} model tensors (e.g. {missing[0]}); "
                        "is it a checkpoint of this model?")
    sizes = {n: meta[n].size.numel() * meta[n].properties.dtype.itemsize for n in names}
    groups = plan_shards(sizes, max_shard_bytes)
    files = [SAFE_WEIGHTS_NAME] if len(groups) == 1 else \
        [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    reader = dcp.FileSystemReader(str(ckpt))
    weight_map = {}
    for fname, group in zip(files, groups, strict=True):
        # (size,) tensors allocated here and filled in place by DCP from the chunks of every rank
        tensors = {n: torch.empty(meta[n].size, dtype=meta[n].properties.dtype) for n in group}
        _load({MODEL_KEY: tensors}, reader)
        save_file(tensors, dest / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, fname))
        del tensors
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (dest / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return files


def _load(state: dict[str, Any], reader: Any) -> None:
    """`dcp.load` in this process alone (no_dist), also when a training's process group is still up."""
    import torch.distributed.checkpoint as dcp

    with single_process_ok():
        dcp.load(state, storage_reader=reader, no_dist=True)


def read_tensors(ckpt: str | Path, names: list[str] | None = None, key: str = MODEL_KEY) -> dict[str, Any]:
    """Full tensors under `key` of a sharded checkpoint (all of them by default), e.g. for tests and tools."""
    import torch
    import torch.distributed.checkpoint as dcp

    meta = checkpoint_tensors(ckpt, key)
    tensors = {n: torch.empty(meta[n].size, dtype=meta[n].properties.dtype) for n in (names or list(meta))}
    _load({key: tensors}, dcp.FileSystemReader(str(ckpt)))
    return tensors
