"""Unlabelled tiles for self-supervised pretraining: a decoded uint8 tile cache and a resumable sampler.

TILES may be any folder of images at any depth (an ImageFolder tree such as PCam's works: the labels
are ignored), or a tiling output folder, whose ``tiles/`` sub-folder is used.

Tile cache: the tiles are decoded once into one memory-mapped ``(N, H, W, 3)`` uint8 ``.npy`` file
(`TileCache`), so the training loop gathers a batch with one fancy index and no JPEG decode or per-image
Python. The file is named by a hash of its inputs (every file's path, size and mtime, and the cache size
in pixels): any change to the tile set makes a new cache, an unchanged one is reused across epochs and
runs. Unreadable files are dropped and listed with their reason in the cache's manifest.

Determinism: epoch ``e`` visits the images in the order of a permutation seeded by ``(seed, e)``, and
each batch's augmentation generator is seeded by ``(seed, e, rank, batch)``. So a run resumed at step
``s`` sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_path, atomic_write_json
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


def epoch_indices(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's sample indices for one epoch, (batches_per_epoch, batch_size) (the `EpochSampler` order)."""
    g = torch.Generator().manual_seed(_mix(seed, epoch))
    perm = torch.randperm(n, generator=g).numpy()
    per_rank = (n // (batch_size * world)) * batch_size
    return perm[rank::world][:per_rank].reshape(-1, batch_size)


CACHE_VERSION = 1


def cache_key(files: list[Path], size: int) -> str:
    """Hash of the cache's inputs: every file's path, byte size and mtime, the requested pixel size (0 = the
    tiles' own), the format version."""
    h = hashlib.sha256(f"v{CACHE_VERSION} size={size}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """$DOMAINFM_CACHE, else $XDG_CACHE_HOME/domainfm, else ~/.cache/domainfm (then ``tiles/``)."""
    root = os.environ.get("DOMAINFM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "domainfm")
    return Path(root) / "tiles"


@dataclass
class TileCache:
    """Decoded tiles: `array` (N, S, S, 3) uint8 memory map, `files` the N sources, `skipped` (path, reason)."""

    path: Path
    array: np.ndarray
    files: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    built: bool = False  # True when this call decoded the tiles (False: reused)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        """(b,) indices -> (b, S, S, 3) uint8 tensor (one gather from the memory map)."""
        return torch.from_numpy(np.ascontiguousarray(self.array[np.sort(idx)]))[np.argsort(np.argsort(idx))]


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str, bool]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
            resized = img.size != (size, size)
            if resized:
                img = img.resize((size, size), Image.BILINEAR)  # PIL resizes with antialiasing
            return np.asarray(img, dtype=np.uint8), "", resized
    except Exception as exc:  # noqa: BLE001 - any decode failure drops the file with its reason
        return None, f"{type(exc).__name__}: {exc}", False


def _native_size(files: list[Path]) -> int:
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                return int(min(im.size))
        except Exception:  # noqa: BLE001 - the decode pass reports it
            continue
    raise UserError("no readable tile images")


def build_tile_cache(files: list[Path], cache_dir: str | Path | None = None, size: int = 0,
                     threads: int = 0) -> TileCache:
    """Decode `files` once into ``cache_dir/<key>.npy`` (+ ``.json`` manifest) or reuse the one that exists.

    `size` = 0 keeps the first readable tile's size (tiles of another size are resized to it, counted in
    the manifest). Decoding runs in a thread pool (PIL releases the GIL while decoding); the file appears
    atomically, so a killed build leaves no half cache."""
    if not files:
        raise UserError("no tile images to cache")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(files, size)  # the requested size (0 = native): a lookup opens no image
    npy, manifest = root / f"{key}.npy", root / f"{key}.json"
    if npy.is_file() and manifest.is_file():
        meta = json.loads(manifest.read_text())
        arr = np.load(npy, mmap_mode="r")
        return TileCache(npy, arr, meta["files"], [tuple(s) for s in meta["skipped"]], built=False)
    root.mkdir(parents=True, exist_ok=True)
    size = size or _native_size(files)
    workers = threads or min(8, os.cpu_count() or 1)
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    resized = 0
    chunk = 2048  # bounded memory: decode and write in chunks
    with atomic_path(npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3))
        n = 0
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(files), chunk):
                part = files[start:start + chunk]
                for f, (arr, why, was_resized) in zip(part, pool.map(lambda p: _decode(p, size), part),
                                                      strict=True):
                    if arr is None:
                        log.warning("unreadable tile dropped: %s (%s)", f, why)
                        skipped.append((str(f), why))
                        continue
                    out[n] = arr
                    resized += was_resized
                    kept.append(str(f))
                    n += 1
        out.flush()
        del out
        if n == 0:
            raise UserError(f"none of the {len(files)} tile images could be read")
        if n < len(files):  # drop the unused tail rows: rewrite the header's shape (a cheap truncate)
            _truncate_npy(tmp, n, (size, size, 3))
    atomic_write_json(manifest, {"version": CACHE_VERSION, "size": size, "n": len(kept), "files": kept,
                                 "skipped": skipped, "n_inputs": len(files), "resized": resized})
    log.info("tile cache %s: %d tiles decoded at %d px (%d dropped)", npy, len(kept), size, len(skipped))
    return TileCache(npy, np.load(npy, mmap_mode="r"), kept, skipped, built=True)


def _truncate_npy(path: str | Path, n: int, tail: tuple[int, ...]) -> None:
    """Keep the first `n` rows of a uint8 .npy file written by open_memmap (new header, same data start)."""
    src = np.load(path, mmap_mode="r")
    keep = np.array(src[:n])
    del src
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a bare name
        np.save(fh, keep)
