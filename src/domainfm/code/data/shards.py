"""Packed token shards: the contract between `domainfm code pack` and `domainfm code pretrain`.

Layout of a PACKED_DIR::

    index.json            {"seq_len": L, "dtype": "uint16"|"uint32", "vocab_size": V, "seed": S,
                           "splits": {"train": {"shards": [{"file": "train/00000.bin", "n_seqs": N}, ...],
                                                "n_seqs": ..., "n_tokens": ...},
                                      "val": {...}},
                           ... (tokenizer, fim settings, repos per split: written by `pack`)}
    train/00000.bin       raw row-major array of n_seqs x L tokens (np.memmap-able)
    val/00000.bin

Each row holds exactly L tokens; the model's labels are its inputs (transformers shifts them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_json


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when the vocabulary fits (halves the disk and page-cache footprint), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def write_shard(path: str | Path, seqs: np.ndarray) -> None:
    """Write an (n_seqs, L) array atomically as one raw shard."""
    with atomic_path(path) as tmp:
        np.ascontiguousarray(seqs).tofile(tmp)


def write_index(packed_dir: str | Path, index: dict[str, Any]) -> None:
    atomic_write_json(Path(packed_dir) / "index.json", index)


def read_index(packed_dir: str | Path) -> dict[str, Any]:
    p = Path(packed_dir) / "index.json"
    if not p.is_file():
        raise UserError(f"{packed_dir}: not a packed dataset (no index.json); run `domainfm code pack` first")
    return json.loads(p.read_text())


class PackedDataset:
    """Random access to the packed sequences of one split, memory-mapped (no copy of the data)."""

    def __init__(self, packed_dir: str | Path, split: str = "train") -> None:
        self.packed_dir = Path(packed_dir)
        self.split = split
        self.index = read_index(self.packed_dir)
        if split not in self.index["splits"]:
            raise UserError(f"{packed_dir}: no split {split!r}; have {', '.join(self.index['splits'])}")
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index["dtype"])
        # padding token of the last row of each shard (None for packs without padding): mask it from the loss
        self.pad_id: int | None = self.index.get("pad_id")
        self._maps: list[np.memmap] = []
        for sh in self.index["splits"][split]["shards"]:
            if sh["n_seqs"]:
                self._maps.append(np.memmap(self.packed_dir / sh["file"], dtype=self.dtype, mode="r",
                                            shape=(sh["n_seqs"], self.seq_len)))
        self._offsets = np.cumsum([0] + [m.shape[0] for m in self._maps])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        """Sequence `i` as int64 of shape (L,)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return np.asarray(self._maps[s][i - self._offsets[s]], dtype=np.int64)
