"""A cache-line-blocked Bloom filter over uint64 keys: numba kernels, a numpy twin, exact sizing.

Why our own and not `rbloom`: on the 28 MB benchmark corpus (28 M n-grams) rbloom's `update` took 92 s
of a 120 s index build: a Python call per key for the hash function, then k = 10 probes scattered over
a 50 MB bit array, i.e. k cache misses per key. Here every key touches one 512-bit block (one 64-byte
cache line): the block comes from the key's high bits, the k bit positions inside it from an LCG
seeded by the key, all in a compiled loop over a numpy array (no per-key Python). The numpy twin
(`_add_numpy` / `_contains_numpy`) computes exactly the same bits and is used when numba is missing;
a test checks that both give identical filters. `benchmarks/bench_bloom.py` measures both against
rbloom on the same keys (build time and false-positive rate).

Blocking raises the false-positive rate for a given size (keys are not spread evenly over the blocks),
so the size is not taken from the textbook formula: `plan` computes the blocked filter's exact
expected rate (a Poisson mixture over the keys per block) and picks the smallest size that meets the
target, and the index records that rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK_BITS = 512
WORDS_PER_BLOCK = BLOCK_BITS // 64
_MIX = np.uint64(0x9E3779B97F4A7C15)
_LCG_A = np.uint64(6364136223846793005)
_LCG_C = np.uint64(1442695040888963407)
_S32, _S55, _S6, _M63, _ONE = np.uint64(32), np.uint64(55), np.uint64(6), np.uint64(63), np.uint64(1)


def expected_fpr(n_keys: int, n_blocks: int, k: int) -> float:
    """The blocked filter's false-positive rate: sum_i P(i keys in the block) * (1 - (1 - 1/512)^(k i))^k."""
    if n_keys <= 0:
        return 0.0
    lam = n_keys / n_blocks
    q = 1.0 - 1.0 / BLOCK_BITS
    hi = int(lam + 12 * math.sqrt(lam) + 20)
    total, log_p = 0.0, -lam  # log Poisson(0)
    for i in range(hi + 1):
        if i:
            log_p += math.log(lam) - math.log(i)
        total += math.exp(log_p) * (1.0 - q ** (k * i)) ** k
    return total


@dataclass(frozen=True)
class BloomPlan:
    n_keys: int
    n_blocks: int
    k: int
    fpr: float  # the expected rate at n_keys

    @property
    def bytes(self) -> int:
        return self.n_blocks * BLOCK_BITS // 8


def plan(n_keys: int, target_fpr: float) -> BloomPlan:
    """The smallest blocked filter (in steps of 1/8 bit per key) whose expected rate meets the target."""
    n = max(1, int(n_keys))
    bits_per_key = -math.log(target_fpr) / math.log(2) ** 2  # the textbook size: a lower bound here
    while True:
        n_blocks = max(1, math.ceil(n * bits_per_key / BLOCK_BITS))
        k = max(1, min(16, round(math.log(2) * n_blocks * BLOCK_BITS / n)))
        rate = min(expected_fpr(n, n_blocks, k), expected_fpr(n, n_blocks, max(1, k - 1)))
        if rate <= target_fpr:
            k = k if expected_fpr(n, n_blocks, k) <= target_fpr else max(1, k - 1)
            return BloomPlan(n, n_blocks, k, expected_fpr(n, n_blocks, k))
        bits_per_key += 0.125


def _positions_numpy(keys: np.ndarray, n_blocks: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) word indices and bit masks of the keys (the numpy twin of the kernels' inner loop)."""
    with np.errstate(over="ignore"):
        block = ((keys >> _S32) * np.uint64(n_blocks)) >> _S32  # (n,) uniform in [0, n_blocks)
        g = keys * _MIX
        words = np.empty((len(keys), k), dtype=np.int64)
        masks = np.empty((len(keys), k), dtype=np.uint64)
        for j in range(k):
            g = g * _LCG_A + _LCG_C
            p = g >> _S55  # the top 9 bits: a bit of the 512-bit block
            words[:, j] = (block * np.uint64(WORDS_PER_BLOCK) + (p >> _S6)).astype(np.int64)
            masks[:, j] = _ONE << (p & _M63)
    return words, masks


def _add_numpy(table: np.ndarray, keys: np.ndarray, n_blocks: int, k: int) -> None:
    words, masks = _positions_numpy(keys, n_blocks, k)
    np.bitwise_or.at(table, words.ravel(), masks.ravel())


def _contains_numpy(table: np.ndarray, keys: np.ndarray, n_blocks: int, k: int) -> np.ndarray:
    words, masks = _positions_numpy(keys, n_blocks, k)
    return ((table[words] & masks) == masks).all(axis=1)


def _kernels():  # compiled on first use and cached on disk (numba is optional)
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True)
    def add(table, keys, n_blocks, k):  # pragma: no cover - compiled
        nb = np.uint64(n_blocks)
        for i in range(keys.shape[0]):
            h = keys[i]
            base = ((h >> _S32) * nb >> _S32) * np.uint64(WORDS_PER_BLOCK)
            g = h * _MIX
            for _ in range(k):
                g = g * _LCG_A + _LCG_C
                p = g >> _S55
                table[base + (p >> _S6)] |= _ONE << (p & _M63)

    @numba.njit(cache=True, nogil=True)
    def contains(table, keys, n_blocks, k, out):  # pragma: no cover - compiled
        nb = np.uint64(n_blocks)
        for i in range(keys.shape[0]):
            h = keys[i]
            base = ((h >> _S32) * nb >> _S32) * np.uint64(WORDS_PER_BLOCK)
            g = h * _MIX
            hit = True
            for _ in range(k):
                g = g * _LCG_A + _LCG_C
                p = g >> _S55
                m = _ONE << (p & _M63)
                if table[base + (p >> _S6)] & m != m:
                    hit = False
                    break
            out[i] = hit

    return add, contains


@functools.cache
def kernels():  # compiled once per process
    return _kernels()


class BlockedBloom:
    """`add` / `contains` numpy uint64 keys; `save` / `load` as a raw .npy of the table."""

    def __init__(self, p: BloomPlan, table: np.ndarray | None = None, use_numba: bool = True) -> None:
        self.plan = p
        self.table = np.zeros(p.n_blocks * WORDS_PER_BLOCK, dtype=np.uint64) if table is None else table
        self._k = kernels() if use_numba else None

    def add(self, keys: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if self._k is not None:
            self._k[0](self.table, keys, self.plan.n_blocks, self.plan.k)
        else:
            for s in range(0, len(keys), 1 << 18):  # bounded temporaries: (chunk, k) words and masks
                _add_numpy(self.table, keys[s:s + (1 << 18)], self.plan.n_blocks, self.plan.k)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if self._k is not None:
            out = np.empty(len(keys), dtype=np.bool_)
            self._k[1](self.table, keys, self.plan.n_blocks, self.plan.k, out)
            return out
        return np.concatenate([_contains_numpy(self.table, keys[s:s + (1 << 18)], self.plan.n_blocks, self.plan.k)
                               for s in range(0, len(keys), 1 << 18)] or [np.empty(0, dtype=bool)])

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, self.table, allow_pickle=False)

    @classmethod
    def load(cls, path: Path, p: BloomPlan) -> BlockedBloom:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
        if table.dtype != np.uint64 or table.shape != (p.n_blocks * WORDS_PER_BLOCK,):
            raise ValueError(f"{path}: filter table does not match its recorded size")
        return cls(p, table=table)
