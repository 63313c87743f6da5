"""Fused MinHash signatures with numba: one pass over the bytes, no intermediate arrays.

The numpy path in `minhash.py` is the reference: it builds token hashes, shingle hashes and a
``(shingles, num_perm)`` block of permuted values, each a full pass over memory. This kernel computes
the *same* numbers (bit for bit; a test checks it) in one loop per file:

- a token is a maximal ``[A-Za-z0-9_]`` run; its hash is ``mix64(sum_j byte_j * P^j + length)``, exactly
  what the numpy prefix-hash difference gives;
- the last `ngram` token hashes sit in a small window; each full window gives a shingle hash
  ``mix64(sum_i t_i * MULT_i)`` whose top 32 bits are the shingle key ``x``;
- the `num_perm` minima ``min (a_p * x + b_p) mod 2^32`` over the file's keys are computed in a loop
  that LLVM vectorises (16 uint32 lanes with AVX-512). Repeated shingles are harmless: a minimum is
  idempotent.

Why write it ourselves: the numpy path is bound by memory traffic (three passes over a 1 MB block per
1,024 shingles); the fused loop keeps the 256 minima in L1. `benchmarks/bench_near_dedup.py` measures it.
This module imports numba at the top: `MinHasher` imports it only when signatures are computed, and
falls back to the numpy path when numba is missing.
"""

from __future__ import annotations

import numba
import numpy as np

from domainfm.code.curate.minhash import _NGRAM_MULT, _P, _TOKEN

u64 = np.uint64


@numba.njit(inline="always")
def _mix64(x):
    x ^= x >> u64(30)
    x *= u64(0xBF58476D1CE4E5B9)
    x ^= x >> u64(27)
    x *= u64(0x94D049BB133111EB)
    x ^= x >> u64(31)
    return x


@numba.njit(inline="always")
def _update(m, a, b, keys, n):
    """m[p] = min(m[p], min_s (a[p] * keys[s] + b[p]) mod 2^32) over the n keys of one file.

    The perm loop is the vectorised one (16 uint32 lanes with AVX-512); four keys per pass halve the
    loads and stores of the minima (measured 2x faster than one key per pass).
    """
    n4 = n // 4 * 4
    for s in range(0, n4, 4):
        x0, x1, x2, x3 = keys[s], keys[s + 1], keys[s + 2], keys[s + 3]
        for p in range(m.size):
            ap, bp = a[p], b[p]
            v01 = min(np.uint32(ap * x0 + bp), np.uint32(ap * x1 + bp))
            v23 = min(np.uint32(ap * x2 + bp), np.uint32(ap * x3 + bp))
            m[p] = min(m[p], min(v01, v23))
    for s in range(n4, n):
        for p in range(m.size):
            m[p] = min(m[p], np.uint32(a[p] * keys[s] + b[p]))


@numba.njit(cache=True, nogil=True)
def _signatures(buf, offsets, is_token, mult, a, b, ngram, poly, out):  # pragma: no cover - compiled
    """buf: all texts' UTF-8 bytes; offsets: (N + 1,) int64; out: (N, num_perm) uint32, all-max."""
    # local copies: LLVM then knows the minima cannot alias the multipliers and vectorises (~3x faster)
    num_perm = a.size
    la, lb = np.empty(num_perm, dtype=np.uint32), np.empty(num_perm, dtype=np.uint32)
    for p in range(num_perm):
        la[p], lb[p] = a[p], b[p]
    m = np.empty(num_perm, dtype=np.uint32)
    win = np.zeros(ngram, dtype=np.uint64)
    longest = 0
    for f in range(offsets.size - 1):
        longest = max(longest, offsets[f + 1] - offsets[f])
    keys = np.empty(longest // 2 + 2, dtype=np.uint32)  # a file has at most (bytes + 1) / 2 tokens
    for f in range(offsets.size - 1):
        m[:] = 0xFFFFFFFF
        n_keys = 0
        n_tok = 0
        h = u64(0)
        pw = u64(1)
        length = 0
        for i in range(offsets[f], offsets[f + 1] + 1):
            if i < offsets[f + 1] and is_token[buf[i]]:
                h += u64(buf[i]) * pw
                pw *= poly
                length += 1
                continue
            if length == 0:
                continue
            t = _mix64(h + u64(length))
            h, pw, length = u64(0), u64(1), 0
            if n_tok < ngram:
                win[n_tok] = t
            else:
                for k in range(ngram - 1):
                    win[k] = win[k + 1]
                win[ngram - 1] = t
            n_tok += 1
            if n_tok >= ngram:
                acc = u64(0)
                for k in range(ngram):
                    acc += win[k] * mult[k]
                keys[n_keys] = np.uint32(_mix64(acc) >> u64(32))
                n_keys += 1
        if 0 < n_tok < ngram:  # a short file: one shingle of all its tokens
            acc = u64(0)
            for k in range(n_tok):
                acc += win[k] * mult[k]
            keys[n_keys] = np.uint32(_mix64(acc) >> u64(32))
            n_keys += 1
        _update(m, la, lb, keys, n_keys)
        for p in range(num_perm):
            out[f, p] = m[p]


def signatures(texts: list[str], a: np.ndarray, b: np.ndarray, ngram: int) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures, identical to `MinHasher.signatures`' numpy path."""
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return _run(np.frombuffer(b"".join(parts), dtype=np.uint8), offsets, a, b, ngram)


def signatures_arrow(column, a: np.ndarray, b: np.ndarray, ngram: int) -> np.ndarray:
    """The same signatures straight from an Arrow string column (e.g. a Parquet ``content`` column):
    the kernel reads Arrow's UTF-8 data and offsets buffers in place, so no Python string is built."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise TypeError(f"expected a string or binary column, got {arr.type}")
    arr = arr.fill_null(b"")
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=width)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    return _run(data, offsets, a, b, ngram)


def _run(buf: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, ngram: int) -> np.ndarray:
    if ngram > len(_NGRAM_MULT):
        raise ValueError(f"ngram <= {len(_NGRAM_MULT)} supported, got {ngram}")
    out = np.full((len(offsets) - 1, a.size), 0xFFFFFFFF, dtype=np.uint32)
    _signatures(buf, offsets, _TOKEN, _NGRAM_MULT, a, b, ngram, np.uint64(_P), out)
    return out
