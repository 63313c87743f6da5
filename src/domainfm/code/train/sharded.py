"""Sharded checkpoints: `torch.distributed.checkpoint` (DCP) folders that every process writes in parallel.

Why: a gathered FSDP checkpoint needs the whole model + both AdamW moments in rank 0's host RAM
(12 bytes/parameter, ~190 GB for the 15B preset) and one writer. Here each rank writes only its own
shards, so host memory and write time per rank shrink with the number of ranks.

Layout of ``OUT/checkpoints/step_00000100/``::

    .metadata          DCP's index: every tensor's global shape and dtype, and which file / byte range
                       holds each of its chunks (written by rank 0 once every rank has written)
    __0_0.distcp ...   one file per rank: its shards of the weights and of the AdamW state
    trainer.pt         rank 0: step, scheduler, grad scaler, every rank's RNG states, data position,
                       world size and the run's config (small, `torch.save`)
    model_config.json  the transformers config (so `domainfm code export-checkpoint` needs nothing else)

Keys inside the DCP are the `get_state_dict` names, the same with or without FSDP and for any number of
processes: ``model.<fqn>`` and ``optim.state.<fqn>.{step,exp_avg,exp_avg_sq}`` / ``optim.param_groups``.
Loading therefore reshards: DCP reads, for each process, exactly the byte ranges of the global tensors
that the process's own shards cover — a run saved by 2 FSDP processes resumes in 1 plain process or in
4 FSDP processes (`load_sharded`).

Commit: all ranks write into ``.tmp-step_*``; rank 0 adds `trainer.pt` and renames the folder into
place (`checkpoint.commit`), so a kill -9 of any rank during a save never leaves a folder that resume
would pick up. A multi-node run needs OUT on a file system every node sees (as any DCP writer does).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from domainfm.code.train.checkpoint import CKPT_DIR, commit, save_fsynced

MODEL_KEY, OPTIM_KEY = "model", "optim"


@contextlib.contextmanager
def single_process_ok() -> Iterator[None]:
    """Silence DCP's "assuming the intent is to save/load in a single process" (it is, on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in a single process.*")
        yield


def _barrier(info: Any) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def save_sharded(out_dir: str | Path, step: int, model: Any, optimizer: Any, trainer_state: dict[str, Any] | None,
                 info: Any, keep: int, model_config: Any) -> Path:
    """Write checkpoint `step` as a DCP folder (collective: every process calls it).

    `model` is the unwrapped module (FSDP2 `fully_shard`ed or plain), `trainer_state` rank 0's small
    dict (None on the other ranks). Returns the committed folder.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(out_dir) / CKPT_DIR
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"  # the same name on every rank (no pid: ranks share it)
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a writer killed mid-save
        tmp.mkdir(parents=True)
    _barrier(info)
    # FSDP: DTensor shards (each rank's own slice); plain model: full tensors (DDP ranks dedup to one writer)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    # every rank writes __RANK_0.distcp (fsynced); the call returns once rank 0 wrote `.metadata`
    with single_process_ok():
        dcp.save({MODEL_KEY: model_sd, OPTIM_KEY: optim_sd},
                 storage_writer=dcp.FileSystemWriter(tmp, single_file_per_rank=True, sync_files=True),
                 no_dist=not info.distributed)
    if info.is_main:
        save_fsynced({**(trainer_state or {}), "format": "sharded"}, tmp / "trainer.pt")
        model_config.to_json_file(tmp / "model_config.json")
        commit(tmp, final, keep)
    _barrier(info)  # nobody proceeds (or is killed) believing in a checkpoint that is not committed yet
    return final


def load_sharded(path: str | Path, model: Any, optimizer: Any, info: Any) -> None:
    """Fill `model` (FSDP-sharded or plain, already materialised) and `optimizer` from a DCP folder,
    whatever the number of processes that wrote it (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # the target layout: this process's shards (FSDP) or full tensors; DCP reads the matching byte ranges
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {MODEL_KEY: model_sd, OPTIM_KEY: optim_sd}
    with single_process_ok():
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(path)), no_dist=not info.distributed)
    set_state_dict(model, optimizer, model_state_dict=state[MODEL_KEY], optim_state_dict=state[OPTIM_KEY])
