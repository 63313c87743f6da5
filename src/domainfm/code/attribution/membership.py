"""The membership filter, the Data Portraits way: a Bloom filter over hashed byte n-grams of the corpus.

One filter per index shard (`bloom.BlockedBloom`, a cache-line-blocked Bloom filter; see bloom.py for why
not rbloom). It is sized from the number of n-grams the shard will insert for a target false-positive
rate per lookup; repeated n-grams only make the real rate lower. A snippet is checked by hashing *every* n-gram of it (stride 1): when the corpus
was indexed with stride 1, every substring of a training file of at least `width` bytes has all its
n-grams in the filter, so it is always found (no false negatives). With a corpus stride s > 1 the same
holds for substrings of at least ``width + s - 1`` bytes (some aligned n-gram lies inside them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domainfm.code.attribution.bloom import BlockedBloom, BloomPlan, plan
from domainfm.code.attribution.ngrams import char_offsets, ngram_hashes


class MembershipFilter:
    """The n-gram Bloom filter of one index shard: `add` numpy keys, `contains` -> (n,) bool, `save` / `load`."""

    # keys are inserted in sorted batches: a key's block is monotonic in the key, so a sorted batch sweeps
    # the table once instead of missing the cache on every key (4.6x faster on 28 M keys, 55 MB table)
    BATCH = 1 << 22

    def __init__(self, expected_items: int, fpr: float) -> None:
        self.plan = plan(expected_items, fpr)
        self._bloom = BlockedBloom(self.plan)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    @classmethod
    def load(cls, path: Path, info: dict) -> MembershipFilter:
        obj = cls.__new__(cls)
        obj.plan = BloomPlan(int(info["n_ngrams"]), int(info["n_blocks"]), int(info["k"]), float(info["fpr"]))
        obj._bloom = BlockedBloom.load(path, obj.plan)
        obj._pending, obj._n_pending = [], 0
        return obj

    def add(self, keys: np.ndarray) -> None:
        if len(keys):
            self._pending.append(keys)
            self._n_pending += len(keys)
            if self._n_pending >= self.BATCH:
                self.flush()

    def flush(self) -> None:
        if self._pending:
            self._bloom.add(np.sort(np.concatenate(self._pending)))
            self._pending, self._n_pending = [], 0

    def contains(self, keys: np.ndarray) -> np.ndarray:
        self.flush()
        return self._bloom.contains(keys)

    def save(self, path: Path) -> None:
        self.flush()
        self._bloom.save(path)

    @property
    def size_bytes(self) -> int:
        return self.plan.bytes


@dataclass
class Membership:
    """The verdict for one snippet: which of its n-grams are in the corpus, and the longest covered span."""

    n_ngrams: int
    n_hits: int
    longest_chars: int  # the longest run of consecutive hits, as the span of characters it covers
    longest_start: int  # character offset of that span in the snippet (-1 when there is none)
    longest_end: int

    @property
    def fraction(self) -> float:
        return self.n_hits / self.n_ngrams if self.n_ngrams else 0.0

    def to_dict(self) -> dict:
        return {"n_ngrams": self.n_ngrams, "n_hits": self.n_hits, "fraction": round(self.fraction, 6),
                "longest_span_chars": self.longest_chars, "longest_span_start": self.longest_start,
                "longest_span_end": self.longest_end}


def hits_of(text: str, filters: list[MembershipFilter], width: int) -> np.ndarray:
    """(n_windows,) bool: is the n-gram at each byte offset of `text` in any of the filters."""
    keys = ngram_hashes(text.encode("utf-8"), width)
    hit = np.zeros(len(keys), dtype=bool)
    for f in filters:
        todo = ~hit
        if not todo.any():
            break
        hit[todo] = f.contains(keys[todo])
    return hit


def longest_run(hit: np.ndarray, width: int, stride: int) -> tuple[int, int]:
    """(start_byte, end_byte) of the longest span covered by chained hits; (0, 0) when there is none.

    Hits at offsets at most `stride` apart chain (with stride 1: consecutive offsets); a chain from
    offset a to offset b covers bytes [a, b + width).
    """
    idx = np.flatnonzero(hit)
    if not len(idx):
        return 0, 0
    breaks = np.flatnonzero(np.diff(idx) > stride)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(idx) - 1]])
    spans = idx[ends] - idx[starts]
    best = int(np.argmax(spans))
    return int(idx[starts[best]]), int(idx[ends[best]]) + width


def membership(text: str, filters: list[MembershipFilter], width: int, stride: int = 1) -> Membership:
    hit = hits_of(text, filters, width)
    if not hit.any():
        return Membership(len(hit), 0, 0, -1, -1)
    b0, b1 = longest_run(hit, width, stride)
    co = char_offsets(text)
    start, end = int(co[b0]), int(co[b1])
    return Membership(len(hit), int(hit.sum()), end - start, start, end)
