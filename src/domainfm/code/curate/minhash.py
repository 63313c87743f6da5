"""Vectorised MinHash: 5-gram shingles of ``[^A-Za-z_0-9]``-split tokens, 256 permutations, LSH bands.

Speed comes from never touching tokens in Python:
1. the UTF-8 bytes become a numpy array; a lookup table marks token bytes; token hashes are
   differences of one polynomial prefix hash (mod 2^64), re-based by a modular inverse power;
2. a 5-gram shingle hash is a mixed linear combination of 5 consecutive token hashes;
3. the 256 permutations are one broadcast ``(a * x + b) >> 32`` over a ``(shingles, 256)`` uint64 block
   (Dietzfelbinger's multiply-add-shift family, 2-independent for 32-bit keys), minimum per file with
   ``np.minimum.reduceat`` over a batch of files at once.
Everything is deterministic (fixed seeds), so signatures computed in different processes agree.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_P = 0x100000001B3  # odd multiplier of the polynomial token hash
_PINV = pow(_P, -1, 1 << 64)
_TOKEN = np.zeros(256, dtype=bool)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_":
    _TOKEN[_c] = True


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (spreads the weak low bits of the products)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class _Powers:
    """P^i and P^-i mod 2^64, grown on demand (one table per process)."""

    def __init__(self) -> None:
        self.pw = np.ones(1, dtype=np.uint64)
        self.inv = np.ones(1, dtype=np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > len(self.pw):
            m = max(n, 2 * len(self.pw), 1 << 16)
            self.pw = np.full(m, _P, dtype=np.uint64)
            self.pw[0] = 1
            np.cumprod(self.pw, out=self.pw)  # wraps mod 2^64, as intended
            self.inv = np.full(m, _PINV, dtype=np.uint64)
            self.inv[0] = 1
            np.cumprod(self.inv, out=self.inv)
        return self.pw[:n], self.inv[:n]


_POWERS = _Powers()
_NGRAM_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                        0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x85EBCA77C2B2AE63],
                       dtype=np.uint64)


def token_hashes(text: str) -> np.ndarray:
    """64-bit hashes of the maximal ``[A-Za-z0-9_]+`` runs of `text`, in order: (T,) uint64."""
    b = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.uint64)
    edge = np.diff(np.concatenate(([0], _TOKEN[b].view(np.int8), [0])))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    if starts.size == 0:
        return np.zeros(0, dtype=np.uint64)
    pw, inv = _POWERS.get(b.size)
    prefix = np.empty(b.size + 1, dtype=np.uint64)
    prefix[0] = 0
    np.cumsum(b.astype(np.uint64) * pw, out=prefix[1:])
    th = (prefix[ends] - prefix[starts]) * inv[starts]  # sum_j b[s+j] * P^j : independent of position
    th += (ends - starts).astype(np.uint64)
    return _mix64(th)


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """One uint64 per ``ngram``-token window (a single shingle when the file has fewer tokens)."""
    t = token_hashes(text)
    if t.size == 0:
        return t
    if t.size < ngram:
        return _mix64((t * _NGRAM_MULT[: t.size]).sum(dtype=np.uint64, keepdims=True))
    n = t.size - ngram + 1
    acc = t[:n] * _NGRAM_MULT[0]
    for i in range(1, ngram):
        acc += t[i: i + n] * _NGRAM_MULT[i]
    return _mix64(acc)


class MinHasher:
    """`signatures(texts) -> (N, num_perm) uint32`; empty texts get the all-max signature.

    Permutation i maps a 32-bit shingle hash x to ``(a_i * x + b_i) mod 2^32`` (a_i odd: a bijection).
    The shingle hashes are already well mixed, so these linear permutations behave like independent
    random ones (a test checks the Jaccard estimate is unbiased with binomial variance); uint32
    arithmetic is SIMD-vectorised by numpy, about 5x faster than 64-bit multiply-shift here.
    """

    def __init__(self, num_perm: int = 256, ngram: int = 5, seed: int = 1, block_rows: int = 1024) -> None:
        self.num_perm = num_perm
        self.ngram = ngram
        self.block_rows = block_rows
        rng = np.random.Generator(np.random.PCG64(seed))
        self.a = (rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64) * 2 + 1).astype(np.uint32)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64).astype(np.uint32)

    def _block(self, x: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """x: (S,) uint32, S <= block_rows -> (S, num_perm) uint32 permuted values (a view of `buf`)."""
        out = buf[: x.size]
        np.multiply(x[:, None], self.a[None, :], out=out)
        out += self.b[None, :]
        return out

    def shingles(self, text: str) -> np.ndarray:
        """The distinct 32-bit shingle keys of one text: (S,) uint32 (repeats would only cost time)."""
        return np.unique((shingle_hashes(text, self.ngram) >> np.uint64(32)).astype(np.uint32))

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(N, num_perm) uint32: the fused numba kernel when numba is installed, else the numpy path."""
        try:
            from domainfm.code.curate import minhash_jit
        except ImportError:
            return self.signatures_numpy(texts)
        return minhash_jit.signatures(texts, self.a, self.b, self.ngram)

    def signatures_arrow(self, column) -> np.ndarray:
        """Signatures of an Arrow string column (a Parquet ``content`` column) without building Python
        strings: the numba kernel reads Arrow's buffers in place (numpy path when numba is missing)."""
        try:
            from domainfm.code.curate import minhash_jit
        except ImportError:
            return self.signatures_numpy(["" if t is None else t for t in column.to_pylist()])
        return minhash_jit.signatures_arrow(column, self.a, self.b, self.ngram)

    def signatures_numpy(self, texts: list[str]) -> np.ndarray:
        """The reference path (plain numpy): the fused kernel must return exactly these numbers."""
        return self.signatures_from_shingles([self.shingles(t) for t in texts])

    def signatures_from_shingles(self, keys: list[np.ndarray]) -> np.ndarray:
        sigs = np.full((len(keys), self.num_perm), 0xFFFFFFFF, dtype=np.uint32)
        buf = np.empty((self.block_rows, self.num_perm), dtype=np.uint32)
        pending: list[int] = []
        rows = 0

        def flush() -> None:
            nonlocal rows
            if pending:
                x = np.concatenate([keys[i] for i in pending])
                offsets = np.cumsum([0] + [keys[i].size for i in pending[:-1]])
                sigs[pending] = np.minimum.reduceat(self._block(x, buf), offsets, axis=0)
                pending.clear()
            rows = 0

        for i, x in enumerate(keys):
            if x.size == 0:
                continue
            if x.size > self.block_rows:  # a big file: its own blocks, min-accumulated
                acc = sigs[i]
                for s in range(0, x.size, self.block_rows):
                    np.minimum(acc, self._block(x[s: s + self.block_rows], buf).min(axis=0), out=acc)
                continue
            if rows + x.size > self.block_rows:
                flush()
            pending.append(i)
            rows += x.size
        flush()
        return sigs


def band_keys(sigs: np.ndarray, bands: int = 25, rows: int = 10) -> np.ndarray:
    """(N, num_perm) uint32 -> (N, bands) uint64: one hash per band of `rows` consecutive minima."""
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} permutations, have {sigs.shape[1]}")
    blocks = sigs[:, : bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
    mult = np.resize(_NGRAM_MULT, rows)
    keys = (blocks * mult).sum(axis=2, dtype=np.uint64)
    keys += np.arange(bands, dtype=np.uint64)  # different bands never share a bucket
    return _mix64(keys)


def jaccard(a: set | np.ndarray, b: set | np.ndarray) -> float:
    """Exact Jaccard of two shingle sets (reference for tests and the benchmark)."""
    sa, sb = (set(a.tolist()) if isinstance(a, np.ndarray) else a), (set(b.tolist()) if isinstance(b, np.ndarray) else b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)
