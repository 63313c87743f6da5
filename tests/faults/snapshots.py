"""What of a stage's output must be identical after kill -9 + rerun (bytes unless a stage says otherwise)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

SCRATCH = {".lock", "_work", ".work"}  # resume bookkeeping and the output lock: not results


VOLATILE = {"seconds", "time", "elapsed", "elapsed_s", "wall", "wall_s", "step_time", "tokens_per_s",
            "tokens_per_sec"}  # wall-clock figures


def norm(obj: Any, root: Path, drop: set[str] = VOLATILE) -> Any:
    """`obj` with the output folder's own path written as <OUT> and wall-clock keys left out (recursively)."""
    if isinstance(obj, str):
        return obj.replace(str(root), "<OUT>")
    if isinstance(obj, bytes):
        return obj.replace(str(root).encode(), b"<OUT>")
    if isinstance(obj, dict):
        return {k: norm(v, root, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, (list, tuple)):
        return [norm(v, root, drop) for v in obj]
    return obj


def tree_bytes(out: Path, skip: set[str] = frozenset(), skip_suffix: tuple[str, ...] = (),
               root: Path | None = None) -> dict[str, bytes]:
    """relative path -> bytes of every file under `out` (the run folder `root` written as <OUT>), but scratch
    folders and `skip` names."""
    res = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or SCRATCH & set(rel.parts) or skip & set(rel.parts) or p.name.endswith(skip_suffix):
            continue
        res[str(rel)] = norm(p.read_bytes(), root or out)  # config files name the output folder
    return res


def h5_content(path: Path) -> dict[str, Any]:
    """Every dataset (dtype, shape, raw bytes) and attribute of an HDF5 file; HDF5's own bytes hold times."""
    import h5py
    import numpy as np

    res: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            attrs = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                arr = obj[()]
                res[name] = (str(obj.dtype), obj.shape, np.asarray(arr).tobytes() if arr.dtype != object
                             else [str(x) for x in np.asarray(arr).ravel()], attrs)
            else:
                res[name] = attrs
        res["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        f.visititems(visit)
    return res


def csv_rows(path: Path, root: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return norm(list(csv.DictReader(fh)), root)


def json_file(path: Path, root: Path) -> Any:
    return norm(json.loads(path.read_text()), root)


def safetensors_content(path: Path) -> tuple[dict, dict]:
    """(metadata, name -> (dtype, shape, bytes)): the header's key order is not part of the format."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
        tensors = {k: (str(f.get_tensor(k).dtype), f.get_tensor(k).shape, f.get_tensor(k).tobytes())
                   for k in sorted(f.keys())}
    return meta, tensors


def jsonl(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in path.read_text().splitlines() if line.strip()]


def torch_state(path: Path) -> dict[str, Any]:
    """A torch checkpoint as comparable data: tensors by bytes, the rest as it is (nested)."""
    import torch

    def conv(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return (str(x.dtype), tuple(x.shape), x.detach().cpu().contiguous().view(-1).view(torch.uint8)
                    .numpy().tobytes() if x.numel() else b"")
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        return x

    return conv(torch.load(path, map_location="cpu", weights_only=False))
