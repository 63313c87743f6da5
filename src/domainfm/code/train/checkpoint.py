"""Training checkpoints: written atomically, found again after a kill -9.

Two layouts under ``OUT/checkpoints/`` (+ ``latest``, a text file naming the newest):

- full: ``step_00000100/state.pt`` — one `torch.save` dict written by rank 0 (single process, DDP);
- sharded: ``step_00000100/{.metadata, __R_0.distcp..., trainer.pt, model_config.json}`` — a
  `torch.distributed.checkpoint` folder every process writes its own shards into (FSDP; see `sharded.py`).

Either is first written to a hidden temporary folder and renamed into place (`commit`), so a folder named
``step_*`` is always complete; ``latest`` is only a shortcut (a missing or stale one falls back to a scan).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.io import atomic_write_text

CKPT_DIR = "checkpoints"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step could touch: Python, NumPy, torch CPU and CUDA (all devices)."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as checkpoint `step` atomically, point `latest` at it, keep the newest `keep`."""

    root = Path(out_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_fsynced(state, tmp / "state.pt")
    return commit(tmp, final, keep)


def save_fsynced(obj: Any, path: Path) -> None:
    """`torch.save` + fsync: the bytes are on disk before the folder holding them is renamed into place."""
    import torch

    torch.save(obj, path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def commit(tmp: Path, final: Path, keep: int) -> Path:
    """Rename the finished temporary folder `tmp` to `final` (the commit), point `latest` at it, prune.

    Until the rename nothing names `tmp` as a checkpoint, so a kill -9 at any earlier point leaves the
    previous checkpoint as the one a rerun resumes from.
    """
    root = final.parent
    if final.exists():  # re-saving the same step (a rerun): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in list_checkpoints(root.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # left by a killed writer
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def is_complete(path: Path) -> bool:
    """A committed checkpoint folder of either layout."""
    return (path / "state.pt").is_file() or ((path / ".metadata").is_file() and (path / "trainer.pt").is_file())


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if is_complete(p))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = Path(out_dir) / CKPT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if is_complete(cand):
            return cand
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's dict; for a sharded one only the small `trainer.pt` part (no weights), with
    ``format: "sharded"`` and ``path`` so that every process then loads its shards (`sharded.load_sharded`)."""
    import torch

    path = Path(path)
    # our own files: they hold RNG states (NumPy arrays, Python tuples), hence weights_only=False
    if (path / "state.pt").is_file():
        return {"format": "full", **torch.load(path / "state.pt", map_location=map_location, weights_only=False)}
    state = torch.load(path / "trainer.pt", map_location=map_location, weights_only=False)
    return {**state, "format": "sharded", "path": str(path)}
