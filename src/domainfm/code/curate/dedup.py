"""Global deduplication: exact (same content hash) then near (MinHash LSH + union-find).

Inputs are columnar numpy arrays over every file that survived the per-file filters, in any order:
``content_id`` (the SWHID), ``priority`` (0 = permissive, 1 = other), ``order`` (global first-seen
rank: repository index, then path) and the MinHash signatures. In every duplicate group the kept file
is the one with the smallest ``(priority, order)``: permissive first, then the first-seen repository.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domainfm.code.curate.minhash import band_keys


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def _keepers(group: np.ndarray, priority: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each element, the index of the kept element of its group (min priority, then order)."""
    idx = np.lexsort((order, priority, group))  # sorted by group, then preference
    g_sorted = group[idx]
    first = np.concatenate(([True], g_sorted[1:] != g_sorted[:-1]))
    keeper_of_run = idx[first][np.cumsum(first) - 1]
    out = np.empty_like(idx)
    out[idx] = keeper_of_run
    return out


def exact_groups(content_id: np.ndarray, priority: np.ndarray, order: np.ndarray) -> np.ndarray:
    """keeper[i] = index of the copy of i's content that is kept (i itself when kept)."""
    if content_id.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(content_id, return_inverse=True)
    return _keepers(group.astype(np.int64), priority, order)


def lsh_edges(keys: np.ndarray) -> np.ndarray:
    """Candidate pairs from LSH buckets: (E, 2) int64, sorted, each pair once.

    Inside a bucket (members sorted by index) every member is linked to the bucket's first member and
    to the member before it: a star keeps the union-find cheap, the chain means that a verified
    cluster does not hinge on one head being similar to everybody.
    """
    n, bands = keys.shape
    edges = []
    for band in range(bands):
        k = keys[:, band]
        order = np.argsort(k, kind="stable")  # stable: members of a bucket in index order
        ks = k[order]
        new = np.concatenate(([True], ks[1:] != ks[:-1]))
        if new.all():
            continue
        head = order[new][np.cumsum(new) - 1]
        dup = ~new
        edges.append(np.stack([head[dup], order[dup]], axis=1))
        prev = np.roll(order, 1)
        chain = dup & (prev != head)  # the previous member, when it is not the head already
        edges.append(np.stack([prev[chain], order[chain]], axis=1))
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    e = np.concatenate(edges).astype(np.int64)
    return np.unique(np.sort(e, axis=1), axis=0)


def round_keys(sigs: np.ndarray, bands: int, rows: int, rounds: int) -> np.ndarray:
    """(N, rounds * bands) LSH keys: round 0 bands the minima in order (the classic b x r layout);
    round r > 0 bands them after a fixed, seeded shuffle of the `num_perm` columns."""
    keys = [band_keys(sigs, bands, rows)]
    rng = np.random.Generator(np.random.PCG64(12345))
    for r in range(1, rounds):
        cols = rng.permutation(sigs.shape[1])
        keys.append(band_keys(sigs[:, cols], bands, rows) ^ np.uint64(r * 0x9E3779B97F4A7C15 & (2**64 - 1)))
    return np.concatenate(keys, axis=1)


@dataclass
class NearResult:
    keeper: np.ndarray  # (N,) index of the kept file of each file's cluster
    edges: np.ndarray  # (E, 2) verified candidate pairs (the union-find input)
    n_clusters: int  # clusters with more than one member
    n_candidates: int = 0  # LSH candidate pairs before verification


def near_clusters(sigs: np.ndarray, priority: np.ndarray, order: np.ndarray, bands: int = 25,
                  rows: int = 10, rounds: int = 1, verify: float = 0.0) -> NearResult:
    """Union-find over LSH candidate pairs; one file kept per connected cluster.

    ``rounds = 1, verify = 0`` is classic banded LSH (datatrove's MinHash dedup): a pair at Jaccard J
    becomes a candidate with probability ``1 - (1 - J^rows)^bands``, only 0.62 at J = 0.7 for 25 x 10.
    ``rounds > 1`` adds bandings of shuffled columns of the same signatures (more candidates: fewer
    misses above the threshold), and ``verify = t`` keeps a candidate pair only when its MinHash
    estimate over all `num_perm` minima is >= t (drops the extra candidates below the threshold).
    """
    n = len(sigs)
    if n == 0:
        return NearResult(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64), 0)
    edges = lsh_edges(round_keys(sigs, bands, rows, rounds))
    n_candidates = len(edges)
    if verify > 0 and len(edges):
        keep = np.concatenate([estimated_jaccard(sigs, c[:, 0], c[:, 1]) >= verify
                               for c in np.array_split(edges, max(1, len(edges) // 65536))])
        edges = edges[keep]
    uf = UnionFind(n)
    for a, b in edges.tolist():
        uf.union(a, b)
    roots = uf.roots()
    keeper = _keepers(roots, priority, order)
    sizes = np.bincount(roots, minlength=n)
    return NearResult(keeper, edges, int((sizes > 1).sum()), n_candidates)


def estimated_jaccard(sigs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Fraction of equal minima between signature rows i and j (the MinHash Jaccard estimate)."""
    return (sigs[i] == sigs[j]).mean(axis=1)
