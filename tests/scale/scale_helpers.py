"""Helpers shared by the tests of `tests/scale` (inputs and output comparison)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
REPOS = {  # real files; bob's repository repeats two of alice's (exact duplicates across shards)
    "alice__text": ["textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "string.py", "difflib.py"],
    "bob__data": ["heapq.py", "bisect.py", "queue.py", "sched.py", "textwrap.py", "glob.py"],
    "carol__net": ["ipaddress.py", "netrc.py", "smtplib.py", "ftplib.py", "poplib.py", "colorsys.py"],
}
FAST = ["--no-humaneval", "--mbpp", "none", "--files-per-shard", "4"]


RUN_KEYS = (b"out:", b"output:", b"workers:", b"executor:", b"ray_address:", b"ray_dedup")


def _plain(obj: object, root: str) -> object:
    """JSON with the output folder's path written as OUT and wall times ("seconds") left out."""
    if isinstance(obj, dict):
        return {k: _plain(v, root) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_plain(v, root) for v in obj]
    return obj.replace(root, "OUT") if isinstance(obj, str) else obj


def _h5_digest(path: Path, root: str) -> bytes:
    """Every dataset's dtype, shape and bytes and every attribute (the output folder written as OUT): what
    a reader sees. (The file bytes are compared as well wherever no attribute names the output folder.)"""
    import h5py
    import numpy as np

    parts: list[str] = []
    with h5py.File(path, "r") as h5:
        def add(name: str, obj: object) -> None:
            attrs = {k: str(v).replace(root, "OUT") for k, v in sorted(obj.attrs.items())}
            if isinstance(obj, h5py.Dataset):
                data = np.asarray(obj[()])
                parts.append(f"{name} {data.dtype} {data.shape} {hashlib.sha256(data.tobytes()).hexdigest()}")
            parts.append(f"{name} {attrs}")

        add("/", h5)
        h5.visititems(add)
    return "\n".join(parts).encode()


def tree_hashes(root: Path, skip: tuple[str, ...] = (".work",)) -> dict[str, str]:
    """sha256 of every file under `root` (relative path -> hex), of its bytes, except: the command's
    `config.yaml` without the run keys (`RUN_KEYS`: output folder, executor, workers); JSON files whose
    text names the output folder or holds wall times (`_plain`); HDF5 files that name the output folder
    (`_h5_digest`; tile records it as CLAM's `save_path`)."""
    hashes = {}
    r = str(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.parts[0] in skip:
            continue
        data = p.read_bytes()
        if p.name == "config.yaml":
            data = b"".join(x for x in data.splitlines(True) if not x.startswith(RUN_KEYS))
        elif p.suffix == ".json" and (r.encode() in data or b'"seconds"' in data):
            data = json.dumps(_plain(json.loads(data), r), sort_keys=True).encode()
        elif p.suffix == ".h5" and r.encode() in data:
            data = _h5_digest(p, r)
        hashes[str(rel)] = hashlib.sha256(data).hexdigest()
    return hashes


def completions(out: Path, stage: str) -> dict[str, str]:
    """The completion markers of a curation stage (their file names and contents)."""
    folder = out / ".work" / stage / "completions"
    return {p.name: p.read_text() for p in sorted(folder.glob("*.json"))}


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DOMAINFM_PROGRESS": "0", **extra}
