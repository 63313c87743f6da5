"""Unlabelled tiles for self-supervised pretraining, with a resumable, deterministic sampler.

TILES may be any folder of images at any depth (an ImageFolder tree such as PCam's works: the labels
are ignored), or a tiling output folder, whose ``tiles/`` sub-folder is used.

Determinism: epoch ``e`` visits the images in the order of a permutation seeded by ``(seed, e)``, and
each sample's augmentation RNG is seeded by ``(seed, e, position)``. So a run resumed at step ``s``
sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("pathology.ssl")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def find_images(root: str | Path) -> list[Path]:
    """Every image under `root` (any depth), sorted; a tiling OUT dir means its ``tiles/`` folder."""
    p = Path(root)
    if not p.exists():
        raise UserError(f"tiles folder not found: {p}")
    if p.is_file():
        raise UserError(f"{p}: expected a folder of tile images, got a file")
    if (p / "tiles").is_dir():
        p = p / "tiles"
    elif (p / "coords").is_dir():
        raise UserError(f"{p}: this tiling output has no tile images (tiles/); rerun `domainfm pathology tile` "
                        "with --save-tiles, or pass a folder of images")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                   and not f.name.startswith("."))
    if not files:
        raise UserError(f"{p}: no images found ({', '.join(IMAGE_SUFFIXES)}) at any depth")
    return files


def _mix(*xs: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), stable across processes and Python versions."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, aug_seed)`` for one epoch from batch `start_batch` on; sharded across ranks."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start_batch, self.rank, self.world = start_batch, rank, world

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.batches_per_epoch() * self.batch_size
        mine = perm[self.rank::self.world][:per_rank]  # every rank gets the same number of full batches
        start = self.start_batch * self.batch_size
        for pos in range(start, per_rank):
            yield mine[pos], _mix(self.seed, self.epoch, self.rank, pos)

    def __len__(self) -> int:
        return self.batches_per_epoch() * self.batch_size - self.start_batch * self.batch_size


class TileDataset(torch.utils.data.Dataset):
    """``(index, aug_seed)`` -> ``transform(PIL image)``; an unreadable file is logged and replaced."""

    def __init__(self, files: list[Path], transform: Any) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        from PIL import Image

        idx, seed = item
        for attempt in range(len(self.files)):
            path = self.files[(idx + attempt) % len(self.files)]
            try:
                with Image.open(path) as im:
                    img = im.convert("RGB")
                break
            except Exception as exc:  # noqa: BLE001 - any decode failure: skip the file, say why
                log.warning("unreadable tile skipped: %s (%s)", path, exc)
        else:  # pragma: no cover - every file unreadable
            raise UserError("no readable tile images")
        # the augmentation draws from the global RNGs: seed them per sample for exact resumes
        random.seed(seed)
        torch.manual_seed(seed)
        return self.transform(img)
