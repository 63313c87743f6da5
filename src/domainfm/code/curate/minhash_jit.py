"""Fused MinHash signatures with numba: one pass over the bytes, no intermediate arrays.

The numpy path in `minhash.py` is the reference: it builds token hashes, shingle hashes and a
``(shingles, num_perm)`` block of permuted values, each a full pass over memory. This kernel computes
the *same* numbers (bit for bit; a test checks it) in one loop per file:

- a token is a maximal ``[A-Za-z0-9_]`` run; its hash is ``mix64(sum_j byte_j * P^j + length)``, exactly
  what the numpy prefix-hash difference gives;
- the last `ngram` token hashes sit in a small window; each full window gives a shingle hash
  ``mix64(sum_i t_i * MULT_i)`` whose top 32 bits are the shingle key ``x``;
- the `num_perm` minima ``min (a_p * x + b_p) mod 2^32`` are updated in a loop that LLVM vectorises
  (16 uint32 lanes with AVX-512). Repeated shingles are harmless: a minimum is idempotent.

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
def _update(m, a, b, key):
    x = np.uint32(key >> u64(32))
    for p in range(m.size):  # (num_perm,) uint32: a vectorised multiply-add-min
        v = np.uint32(a[p] * x + b[p])
        if v < m[p]:
            m[p] = v


@numba.njit(cache=True, nogil=True)
def _signatures(buf, offsets, is_token, mult, a, b, ngram, poly, out):  # pragma: no cover - compiled
    """buf: all texts' UTF-8 bytes; offsets: (N + 1,) int64; out: (N, num_perm) uint32, all-max."""
    win = np.zeros(ngram, dtype=np.uint64)
    for f in range(offsets.size - 1):
        m = out[f]
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
                _update(m, a, b, _mix64(acc))
        if 0 < n_tok < ngram:  # a short file: one shingle of all its tokens
            acc = u64(0)
            for k in range(n_tok):
                acc += win[k] * mult[k]
            _update(m, a, b, _mix64(acc))


def signatures(texts: list[str], a: np.ndarray, b: np.ndarray, ngram: int) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures, identical to `MinHasher.signatures`' numpy path."""
    if ngram > len(_NGRAM_MULT):
        raise ValueError(f"ngram <= {len(_NGRAM_MULT)} supported, got {ngram}")
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
    out = np.full((len(parts), a.size), 0xFFFFFFFF, dtype=np.uint32)
    _signatures(buf, offsets, _TOKEN, _NGRAM_MULT, a, b, ngram, np.uint64(_P), out)
    return out
