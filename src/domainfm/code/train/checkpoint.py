"""Training checkpoints: written atomically, found again after a kill -9.

Layout: ``OUT/checkpoints/step_00000100/state.pt`` (+ ``latest``, a text file naming the newest).
A checkpoint is first written to a hidden temporary folder and renamed into place, so a folder named
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
    import torch

    root = Path(out_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    with open(tmp / "state.pt", "rb") as fh:
        os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (a rerun): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # left by a killed writer
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "state.pt").is_file())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = Path(out_dir) / CKPT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "state.pt").is_file():
            return cand
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    import torch

    # our own files: they hold RNG states (NumPy arrays, Python tuples), hence weights_only=False
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=False)
