"""Which sequences each process reads at each step: a pure function of (seed, step).

The data position of a run is therefore just its step: resuming jumps straight to the right batch with
no iterator state to save, and every process derives its own slice of the global batch without
communication. Sequences are visited in a fresh seeded permutation per epoch (sampling without
replacement), so a run of E epochs sees every sequence exactly E times.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


class BatchPlan:
    """Global batch of step `s` = `batch_size * grad_accum * world_size` consecutive positions of the stream.

    Position `p` of the stream is sequence `perm[p // n][p % n]` where `perm[e]` is the permutation of
    epoch `e` (seeded by `(seed, e)`). Inside a step, micro-batch `m` of rank `r` holds positions
    `(m * world_size + r) * batch_size + [0, batch_size)`: with one micro-batch the ranks together read
    exactly what a single process with `world_size` times the batch would read.
    """

    def __init__(self, n_seqs: int, batch_size: int, grad_accum: int = 1, world_size: int = 1,
                 rank: int = 0, seed: int = 0) -> None:
        self.n_seqs = n_seqs
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:  # only the current and next epoch are ever needed
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_seqs)
        return self._perms[epoch]

    def positions_to_indices(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(positions), dtype=np.int64)
        epochs = positions // self.n_seqs
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[positions[sel] % self.n_seqs]
        return out

    def micro_batches(self, step: int) -> list[np.ndarray]:
        """`grad_accum` arrays of `batch_size` sequence indices: this rank's share of step `step` (0-based)."""
        base = step * self.global_batch
        out = []
        for m in range(self.grad_accum):
            start = base + (m * self.world_size + self.rank) * self.batch_size
            out.append(self.positions_to_indices(np.arange(start, start + self.batch_size, dtype=np.int64)))
        return out

    def position(self, step: int) -> dict[str, int]:
        """The data position after `step` optimizer steps (recorded in checkpoints)."""
        seen = step * self.global_batch
        return {"sequences_seen": seen, "epoch": seen // self.n_seqs, "offset_in_epoch": seen % self.n_seqs}


class StepLoader:
    """Reads the micro-batches of a step as (B, L) int64 tensors, prefetching the next step in a thread.

    Reading is a gather from memory-mapped shards; the thread overlaps it (and the host-to-device copy)
    with the previous step's compute.
    """

    def __init__(self, dataset: Any, plan: BatchPlan, seq_len: int, device: Any) -> None:
        self.dataset = dataset
        self.plan = plan
        self.seq_len = seq_len
        self.device = device
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="domainfm-data")
        self._pending: dict[int, Future] = {}

    def _read(self, step: int) -> list[Any]:
        import torch

        pin = getattr(self.device, "type", str(self.device)) == "cuda"
        out = []
        for idx in self.plan.micro_batches(step):
            rows = np.stack([self.dataset[int(i)][: self.seq_len] for i in idx])  # (B, L)
            t = torch.from_numpy(rows)
            if pin:
                t = t.pin_memory()
            out.append(t.to(self.device, non_blocking=pin))
        return out

    def get(self, step: int) -> list[Any]:
        fut = self._pending.pop(step, None)
        batches = fut.result() if fut is not None else self._read(step)
        self._pending[step + 1] = self._pool.submit(self._read, step + 1)
        return batches

    def close(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
