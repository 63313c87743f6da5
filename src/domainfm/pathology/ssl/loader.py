"""Two augmented views per batch from the tile cache, prepared one step ahead on a background thread.

Batch ``(epoch, b)`` gathers rows ``epoch_indices(...)[b]`` of the memory-mapped cache and draws both
views from one generator seeded by ``(seed, epoch, rank, b)``: a pure function of its inputs, so the
thread changes nothing but the timing, and a resumed run sees the same batches.

Threads (measured, see docs/ssl_features.md): the augmentations are ~300 small operations; they run on
this helper thread with one intra-op thread (set once, when the thread starts; OpenMP's thread count is
per calling thread), while the training step keeps torch's threads. On a GPU the next batch is prepared
while the GPU computes (`overlap`); on the CPU the helper runs between steps: overlapping it there put a
third busy thread on the cores the step's OpenMP team already fills, and measured 0.68x lightly per
CPU-second (spinning threads) against 1.01x without overlap. Toggling `torch.set_num_threads` around each
batch on the training thread was slower still: it clears oneDNN's primitive cache every time.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from domainfm.pathology.ssl.augment import AugmentConfig, augment_batch
from domainfm.pathology.ssl.data import TileCache, _mix, epoch_indices


class ViewPrefetcher:
    """``get(step)`` -> (im_q, im_k) of that step, each (B, 3, S, S) in `memory_format`; prefetches step + 1."""

    def __init__(self, cache: TileCache, aug: AugmentConfig, batch_size: int, seed: int, device: str,
                 rank: int = 0, world: int = 1, memory_format: torch.memory_format = torch.contiguous_format,
                 overlap: bool | None = None) -> None:
        self.cache, self.aug, self.batch_size, self.seed = cache, aug, batch_size, seed
        self.overlap = torch.device(device).type == "cuda" if overlap is None else overlap
        self.device, self.rank, self.world, self.memory_format = device, rank, world, memory_format
        self.steps_per_epoch = len(cache) // (batch_size * world)
        self._orders: dict[int, np.ndarray] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="moco-views", initializer=self._init_thread)
        self._pending: tuple[int, Future] | None = None

    def _init_thread(self) -> None:
        if torch.device(self.device).type == "cpu":
            torch.set_num_threads(1)  # this thread only: OpenMP's thread count is per calling thread

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: epoch_indices(len(self.cache), self.batch_size, self.seed, epoch, self.rank,
                                                 self.world)}
        return self._orders[epoch]

    def _make(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, b = divmod(step, self.steps_per_epoch)
        tiles = self.cache.batch(self._order(epoch)[b])  # (B, S0, S0, 3) uint8
        if torch.device(self.device).type == "cuda":
            tiles = tiles.pin_memory()
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, self.rank, b))
        views = [augment_batch(tiles, self.aug, g, self.device) for _ in range(2)]  # query, key
        return tuple(v.contiguous(memory_format=self.memory_format) for v in views)  # type: ignore[return-value]

    def get(self, step: int, prefetch_next: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pending is not None and self._pending[0] == step:
            views = self._pending[1].result()
        else:
            views = self._pool.submit(self._make, step).result()
        self._pending = (step + 1, self._pool.submit(self._make, step + 1)) if prefetch_next and self.overlap else None
        return views

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
