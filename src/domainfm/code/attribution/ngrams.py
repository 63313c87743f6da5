"""Hashed byte n-grams of text, vectorised: the keys of the membership filter.

A text is taken as its UTF-8 bytes. The n-gram starting at byte i is the window ``b[i : i + width]`` and
its key is a polynomial rolling hash modulo 2^64, finished with splitmix64 so that every bit of the key
depends on every byte. All windows of a text are hashed at once with numpy:

    S[k]  = sum_{j <= k} b[j] * Q^j          (Q = P^-1 mod 2^64; P odd, so the inverse exists)
    H(i)  = P^(i + width - 1) * (S[i + width - 1] - S[i - 1])
          = sum_{j < width} b[i + j] * P^(width - 1 - j)

uint64 arithmetic in numpy wraps modulo 2^64, which is exactly the ring we want, so one cumulative sum
and two multiplications hash every window of a 1 MB file in a few milliseconds; no per-window Python.

Why bytes and not characters: a substring of the characters is a substring of the bytes, so the
"every exact substring of at least `width` bytes is found" guarantee carries over, and the UTF-8 bytes
are what Arrow already stores. Offsets are converted back to characters for reporting (`char_offsets`).
"""

from __future__ import annotations

import numpy as np

_P = 0x100000001B3  # the 64-bit FNV prime: odd, so invertible modulo 2^64
_Q = pow(_P, -1, 1 << 64)
_MASK = (1 << 64) - 1


class _Powers:
    """P^k and Q^k for k < n, grown on demand (one table per process, reused across files)."""

    def __init__(self) -> None:
        self.p = np.ones(1, dtype=np.uint64)
        self.q = np.ones(1, dtype=np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.p) < n:
            size = max(n, 2 * len(self.p))
            with np.errstate(over="ignore"):
                self.p = np.cumprod(np.full(size, _P, dtype=np.uint64), dtype=np.uint64) * np.uint64(_Q)
                self.q = np.cumprod(np.full(size, _Q, dtype=np.uint64), dtype=np.uint64) * np.uint64(_P)
        return self.p[:n], self.q[:n]


_POWERS = _Powers()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def ngram_hashes(data: bytes, width: int, stride: int = 1) -> np.ndarray:
    """Keys of the windows ``data[i : i + width]`` for i = 0, stride, 2*stride, ...; shape (n,), uint64.

    Empty when ``len(data) < width``.
    """
    if width < 1 or stride < 1:
        raise ValueError("width and stride must be >= 1")
    n = len(data)
    if n < width:
        return np.empty(0, dtype=np.uint64)
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64) + np.uint64(1)  # +1: runs of NUL differ by length
    p, q = _POWERS.get(n)
    with np.errstate(over="ignore"):
        s = np.cumsum(b * q, dtype=np.uint64)  # (n,)
        s_prev = np.concatenate([np.zeros(1, dtype=np.uint64), s[: n - width]])  # S[i - 1], (n - width + 1,)
        h = p[width - 1:] * (s[width - 1:] - s_prev)  # (n - width + 1,)
    return _splitmix64(h[::stride] if stride > 1 else h)


def ngram_hash_reference(window: bytes) -> int:
    """The same key for one window, in plain Python (the parity reference for `ngram_hashes`)."""
    h = 0
    for byte in window:
        h = (h * _P + byte + 1) & _MASK
    x = h
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def char_offsets(text: str) -> np.ndarray:
    """For each UTF-8 byte offset of `text` (and the end), the character offset it belongs to; (n_bytes + 1,)."""
    lengths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    if not len(lengths) or lengths.max() == 1:  # pure ASCII: bytes are characters
        return np.arange(len(text) + 1, dtype=np.int64)
    return np.repeat(np.arange(len(text) + 1, dtype=np.int64), np.append(lengths, 1))
