"""Exact + near dedup on a Ray cluster: the decisions of `dedup.py`, with no step holding the corpus.

The local stage 2 (`pipeline.stage2`) loads every signature into one process. Here every step is a Ray
Data shuffle (``groupby(_p).map_groups``) over P hash partitions, and each partition is processed with
vectorised numpy, so a worker holds ``rows / P`` rows of one step at a time (P is chosen from the data
size: `RayDedupOptions.partition_bytes`). The jobs, for a corpus of N records (docs/dedup_at_scale.md
has the measured bytes and memory):

1. **read** (one task per s1 shard): the shard's rows and MinHash signatures (the shard's ``sig-*.npy``
   when stage 1 wrote it, else computed from its ``content`` column with `MinHasher.signatures_arrow`,
   bit-identical to the local path); ``gid`` = global row (shard offset + row), the local index order.
2. **exact** (group by ``(kind, swhid)``): the kept copy is the smallest ``(priority, order, gid)``, as
   `dedup.exact_groups`; the survivors that have a token go on, with their signatures.
3. **buckets** (group by LSH key): rows ``(kind, band, key, gid)``, ``rounds * bands`` per record (keys
   of `dedup.round_keys`); inside a bucket (same kind, band and key; members by gid) each member is
   linked to the bucket's first member and to the member before it, exactly `dedup.lsh_edges`: at most
   two edges per row, O(N) edges, never the pairs of a bucket.
4. **verify** (two co-groups: edges by their low end with the node rows, then by their high end): each
   candidate pair is deduplicated and, when ``verify > 0``, kept only if its MinHash estimate is
   >= verify (`dedup.estimated_jaccard` on the same uint32 minima: the same float).
5. **components**: the large-star / small-star rounds of Kiveris et al., "Connected Components in
   MapReduce and Beyond" (SoCC 2014), each one co-group of the edge list by node. They stop when the
   edges form stars around each component's smallest gid (checked in the large-star job: every node has
   either no smaller neighbour, or exactly one and no larger one); O(log N) rounds.
6. **keepers** (by gid, then by component): in each component the kept record is the smallest
   ``(priority, order, gid)``, as `dedup.near_clusters`' union-find + `_keepers`; with its estimated
   Jaccard to every removed member.

Exactness: buckets, edges, the verified edge set and the components are those of the local path, so the
kept records and the clusters are the same (tests/scale/test_dedup_ray.py checks it against `dedup.py`
and a brute-force union-find). The memory a step needs is bounded by its partition, except one LSH
bucket or one component, which a single call holds (16 bytes per member in ids, 1 KiB with signatures).

`stage2_ray(work)` is the Ray counterpart of `pipeline.stage2` (same files out); `exact_groups_ray` and
`near_clusters_ray` take and return what `dedup.exact_groups` / `dedup.near_clusters` do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.code.curate.dedup import NearResult, round_keys
from domainfm.code.curate.minhash import _mix64

# row tags of the common schema (every internal dataset after the exact job has the columns of `_rows`)
NODE, EDGE, STAT, DUP = 0, 1, 2, 3
# STAT rows: ``a`` = what is counted, ``b`` = the value (summed, or max for the *_MAX codes)
STATS = {0: "candidates", 1: "verified", 2: "violations", 3: "near_clusters", 4: "rows_in", 5: "bytes_in",
         6: "max_partition_bytes", 7: "max_worker_rss", 8: "exact_dups"}
_MAX_CODES = {6, 7}
_CODE = {v: k for k, v in STATS.items()}
EXACT_STEP, NEAR_STEP = 0, 1


@dataclass
class RayDedupOptions:
    """How the Ray jobs are cut (not what they decide: the output does not depend on these)."""

    partitions: int = 0  # hash partitions per shuffle; 0 = from the data size and the cluster's CPUs
    partition_bytes: int = 64 << 20  # target input bytes of one partition (the memory bound of a call)
    max_rounds: int = 64  # connected-component rounds before giving up (O(log N) are needed)
    shuffle: str = "sort_shuffle_pull_based"  # Ray Data's DataContext.shuffle_strategy for our jobs
    stats: dict[str, Any] = field(default_factory=dict)  # filled: per job counters, rounds, bytes


# ---------------------------------------------------------------------------------------------- helpers
def _part(keys: np.ndarray, n: int) -> np.ndarray:
    """Partition of each int64 key: splitmix64 of the key modulo `n` (keys that are gids are dense)."""
    return (_mix64(keys.astype(np.int64).view(np.uint64).copy()) % np.uint64(n)).astype(np.int64)


def _rows(p: np.ndarray, t: int, a: np.ndarray, b: np.ndarray | None = None, c: np.ndarray | None = None,
          k: np.ndarray | None = None, s: list[bytes] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A batch of the common schema: partition, tag, three int64 payloads, kind code, bytes payload."""
    n = len(a)
    z = np.zeros(n, dtype=np.int64)
    return {"_p": p.astype(np.int64), "t": np.full(n, t, dtype=np.int8), "a": a.astype(np.int64),
            "b": z if b is None else b.astype(np.int64), "c": z if c is None else c.astype(np.int64),
            "k": z if k is None else k.astype(np.int64),
            "s": np.array([b""] * n, dtype=object) if s is None else np.asarray(s, dtype=object)}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [x for x in parts if len(x["a"])]
    if not parts:
        return _rows(np.zeros(0), NODE, np.zeros(0))
    return {col: np.concatenate([x[col] for x in parts]) for col in parts[0]}


def _stat_rows(counts: dict[str, int]) -> dict[str, np.ndarray]:
    codes = np.array([_CODE[k] for k in counts], dtype=np.int64)
    return _rows(np.zeros(len(codes)), STAT, codes, np.array(list(counts.values()), dtype=np.int64))


def _measure(batch: dict[str, np.ndarray]) -> dict[str, int]:
    """What one call received (bytes of its arrays) and the peak RSS of its worker process so far."""
    nbytes = sum(v.nbytes if v.dtype != object else sum(len(x) for x in v) + 8 * len(v) for v in batch.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"rows_in": len(batch["a"]) if "a" in batch else len(next(iter(batch.values()))), "bytes_in": nbytes,
            "max_partition_bytes": nbytes, "max_worker_rss": rss}


def _split(batch: dict[str, np.ndarray], tag: int) -> dict[str, np.ndarray]:
    m = batch["t"] == tag
    return {k: v[m] for k, v in batch.items()}


def _sigs(s: np.ndarray) -> np.ndarray:
    """Bytes column of signatures -> (n, num_perm) uint32."""
    if len(s) == 0:
        return np.zeros((0, 0), dtype=np.uint32)
    return np.frombuffer(b"".join(s), dtype=np.uint32).reshape(len(s), -1)


def _lookup(keys: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Index in `keys` (sorted, unique) of each of `want` (all must be present)."""
    pos = np.searchsorted(keys, want)
    if len(want) and (not len(keys) or (pos >= len(keys)).any() or not np.array_equal(keys[pos], want)):
        raise RuntimeError("dedup_ray: an edge names a record missing from its partition")
    return pos


def _take(batch: dict[str, np.ndarray], tags: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The rows of `batch` whose tag is one of `tags` (a vectorised `Dataset.filter`)."""
    m = np.isin(batch["t"], tags)
    return {k: v[m] for k, v in batch.items()}


# ------------------------------------------------------------------------------- per-partition functions
def _read_shard(batch: dict[str, np.ndarray], num_perm: int, ngram: int, near: bool, n_parts: int) -> dict:
    """One s1 shard -> rows keyed for the exact job: gid, kind, swhid, priority, order (+ signature)."""
    import pyarrow.parquet as pq

    from domainfm.code.curate.minhash import MinHasher

    path, offset, sig_path = str(batch["path"][0]), int(batch["offset"][0]), str(batch["sig"][0])
    cols = ["swhid", "license_type", "repo_idx", "file_idx", "kind"] + (["content"] if near else [])
    t = pq.read_table(path, columns=cols)
    n = t.num_rows
    kind = np.array([k or "file" for k in t.column("kind").to_pylist()], dtype=object)
    swh = np.array(t.column("swhid").to_pylist(), dtype=object)
    priority = (np.array(t.column("license_type").to_pylist(), dtype=object) != "permissive").astype(np.int64)
    order = t.column("repo_idx").to_numpy().astype(np.int64) * (1 << 32) + t.column("file_idx").to_numpy()
    if near:
        sigs = (np.load(sig_path) if sig_path and Path(sig_path).is_file()
                else MinHasher(num_perm, ngram).signatures_arrow(t.column("content")))
        s = [r.tobytes() for r in np.ascontiguousarray(sigs, dtype=np.uint32)]
    else:
        s = [b""] * n
    import pandas as pd

    group = np.array([f"{k}\0{h}" for k, h in zip(kind, swh, strict=True)], dtype=object)
    h = pd.util.hash_array(group).view(np.int64)  # stable across processes (fixed siphash key)
    return {"_p": _part(h, n_parts), "gid": offset + np.arange(n, dtype=np.int64), "group": group,
            "kind": kind, "priority": priority, "order": order, "s": np.array(s, dtype=object)}


def _kind_code(kind: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_array(kind.astype(object)).view(np.int64)


def _exact(batch: dict[str, np.ndarray], near: bool, n_parts: int, require_tokens: bool = True) -> dict[str, np.ndarray]:
    """Group by (kind, content id): keep the smallest (priority, order, gid); survivors with tokens go on."""
    st = _measure(batch)
    group, gid, pri, order = batch["group"], batch["gid"], batch["priority"], batch["order"]
    _, g = np.unique(group.astype(str), return_inverse=True)
    o = np.lexsort((gid, order, pri, g))
    first = np.concatenate(([True], g[o][1:] != g[o][:-1]))
    keeper = np.empty_like(gid)
    keeper[o] = gid[o][first][np.cumsum(first) - 1]
    dup = keeper != gid
    out = [_rows(np.zeros(int(dup.sum())), DUP, gid[dup], keeper[dup], np.full(int(dup.sum()), EXACT_STEP))]
    if near:
        sig = _sigs(batch["s"])
        alive = ~dup & (sig != 0xFFFFFFFF).any(axis=1) if require_tokens and len(sig) else ~dup
        ga = gid[alive]
        out.append(_rows(_part(ga, n_parts), NODE, ga, pri[alive], order[alive], _kind_code(batch["kind"][alive]),
                         batch["s"][alive]))
    st["exact_dups"] = int(dup.sum())
    return _concat(out + [_stat_rows(st)])


def _band_rows(batch: dict[str, np.ndarray], bands: int, rows: int, rounds: int, n_parts: int) -> dict:
    """Node rows -> one (kind, band, key, gid) row per LSH band, partitioned by key."""
    nodes = _split(batch, NODE)
    if not len(nodes["a"]):
        return {"_p": np.zeros(0, np.int64), "k": np.zeros(0, np.int64), "band": np.zeros(0, np.int16),
                "key": np.zeros(0, np.int64), "gid": np.zeros(0, np.int64)}
    keys = round_keys(_sigs(nodes["s"]), bands, rows, rounds).view(np.int64)  # (n, B)
    n, nb = keys.shape
    key = keys.reshape(-1)
    return {"_p": _part(key, n_parts), "k": np.repeat(nodes["k"], nb), "band": np.tile(np.arange(nb, dtype=np.int16), n),
            "key": key, "gid": np.repeat(nodes["a"], nb)}


def _buckets(batch: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """`dedup.lsh_edges` on the buckets of one partition: head and previous-member edges (low, high)."""
    st = _measure(batch)
    k, band, key, gid = batch["k"], batch["band"], batch["key"], batch["gid"]
    o = np.lexsort((gid, key, band, k))
    k, band, key, g = k[o], band[o], key[o], gid[o]
    new = np.concatenate(([True], (k[1:] != k[:-1]) | (band[1:] != band[:-1]) | (key[1:] != key[:-1])))
    head = g[new][np.cumsum(new) - 1]
    dup = ~new
    prev = np.roll(g, 1)
    chain = dup & (prev != head)
    e = np.stack([np.concatenate([head[dup], prev[chain]]), np.concatenate([g[dup], g[chain]])], axis=1)
    e = np.unique(e, axis=0) if len(e) else e.reshape(0, 2)
    return _concat([_rows(_part(e[:, 0], n_parts), EDGE, e[:, 0], e[:, 1]), _stat_rows(st)])


def _verify_low(batch: dict[str, np.ndarray], n_parts: int, verify: float) -> dict[str, np.ndarray]:
    """Edges (with the node rows when verifying) grouped by their low end: deduplicate (the same pair
    comes from several bands), attach the low end's signature, send them on keyed by the high end."""
    st = _measure(batch)
    nodes, edges = _split(batch, NODE), _split(batch, EDGE)
    e = np.unique(np.stack([edges["a"], edges["b"]], axis=1), axis=0) if len(edges["a"]) else np.zeros((0, 2), np.int64)
    st["candidates"] = len(e)
    s = None
    if verify > 0 and len(e):
        o = np.argsort(nodes["a"])
        s = nodes["s"][o][_lookup(nodes["a"][o], e[:, 0])]
    return _concat([_rows(_part(e[:, 1], n_parts), EDGE, e[:, 0], e[:, 1], s=s), _stat_rows(st)])


def _verify_high(batch: dict[str, np.ndarray], n_parts: int, verify: float) -> dict[str, np.ndarray]:
    """Edges (with the node rows when verifying) grouped by their high end: keep those with MinHash
    estimate >= verify; emit both directions of each (the large-star input)."""
    st = _measure(batch)
    nodes, edges = _split(batch, NODE), _split(batch, EDGE)
    a, b = edges["a"], edges["b"]
    if verify > 0 and len(a):
        o = np.argsort(nodes["a"])
        sb = _sigs(nodes["s"][o][_lookup(nodes["a"][o], b)])
        keep = (_sigs(edges["s"]) == sb).mean(axis=1) >= verify  # = dedup.estimated_jaccard
        a, b = a[keep], b[keep]
    st["verified"] = len(a)
    x, y = np.concatenate([a, b]), np.concatenate([b, a])
    return _concat([_rows(_part(x, n_parts), EDGE, x, y), _stat_rows(st)])


def _adjacency(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (u, v) rows sorted by u, v and the start of each u's run. Every row of a node is in its
    partition, so this removes duplicates globally (two partitions of the previous step can emit the
    same edge; counted twice it would look like a second smaller neighbour)."""
    e = np.unique(np.stack([u, v], axis=1), axis=0) if len(u) else np.zeros((0, 2), np.int64)
    u, v = e[:, 0], e[:, 1]
    starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1]))) if len(u) else np.zeros(0, np.int64)
    return u, v, starts


def _large_star(batch: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """Rows (u, v) for both directions of every edge, grouped by u: link each neighbour v > u to
    m(u) = min(u, neighbours); output rows (v, m) keyed by v (the small-star input). Counts the nodes
    that are not already a star centre (no smaller neighbour) or leaf (one smaller, no larger)."""
    st = _measure(batch)
    edges = _split(batch, EDGE)
    u, v, starts = _adjacency(edges["a"], edges["b"])
    viol = 0
    if len(u):
        m = np.minimum(u[starts], np.minimum.reduceat(v, starts))
        size = np.diff(np.append(starts, len(u)))
        smaller = np.add.reduceat((v < u).astype(np.int64), starts)
        viol = int(((smaller > 1) | ((smaller == 1) & (smaller < size))).sum())
        mu = np.repeat(m, size)
        up = v > u
        e = np.unique(np.stack([v[up], mu[up]], axis=1), axis=0)
    else:
        e = np.zeros((0, 2), np.int64)
    st["violations"] = viol
    return _concat([_rows(_part(e[:, 0], n_parts), EDGE, e[:, 0], e[:, 1]), _stat_rows(st)])


def _small_star(batch: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """Rows (u, v) with v < u, grouped by u: link u and its smaller neighbours to m = the smallest;
    output both directions of each new edge (the large-star input)."""
    st = _measure(batch)
    edges = _split(batch, EDGE)
    u, v, starts = _adjacency(edges["a"], edges["b"])
    if len(u):
        m = np.repeat(np.minimum.reduceat(v, starts), np.diff(np.append(starts, len(u))))
        x = np.concatenate([u[starts], v])
        y = np.concatenate([m[starts], m])
        e = np.unique(np.stack([x[x != y], y[x != y]], axis=1), axis=0)
    else:
        e = np.zeros((0, 2), np.int64)
    x, y = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    return _concat([_rows(_part(x, n_parts), EDGE, x, y), _stat_rows(st)])


def _label(batch: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """Star edges + node rows grouped by gid: each clustered node, keyed by its component's root."""
    st = _measure(batch)
    nodes, edges = _split(batch, NODE), _split(batch, EDGE)
    u, v, starts = _adjacency(edges["a"], edges["b"])
    if not len(u):
        return _stat_rows(st)
    node = u[starts]
    root = np.minimum(node, np.minimum.reduceat(v, starts))
    on = np.argsort(nodes["a"])
    i = on[_lookup(nodes["a"][on], node)]
    return _concat([_rows(_part(root, n_parts), NODE, node, nodes["b"][i], nodes["c"][i], root, nodes["s"][i]),
                    _stat_rows(st)])


def _keep(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Nodes grouped by component root: keep the smallest (priority, order, gid); one DUP row per other
    member, with ``k`` = the number of minima it shares with the kept one (the estimate times num_perm,
    an integer, so the driver rebuilds `dedup.estimated_jaccard`'s float exactly)."""
    st = _measure(batch)
    nodes = _split(batch, NODE)
    gid, pri, order, root = nodes["a"], nodes["b"], nodes["c"], nodes["k"]
    if not len(gid):
        return _stat_rows(st)
    o = np.lexsort((gid, order, pri, root))
    r = root[o]
    first = np.concatenate(([True], r[1:] != r[:-1]))
    kidx = o[first][np.cumsum(first) - 1]  # row of the kept member, per sorted row
    dup = ~first
    d, k = o[dup], kidx[dup]
    sig = _sigs(nodes["s"])
    equal = (sig[d] == sig[k]).sum(axis=1) if len(d) else np.zeros(0, np.int64)
    st["near_clusters"] = int(first.sum())
    return _concat([_rows(np.zeros(len(d)), DUP, gid[d], gid[k], np.full(len(d), NEAR_STEP), equal),
                    _stat_rows(st)])


# ------------------------------------------------------------------------------------------ the driver
@contextlib.contextmanager
def _data_context(opts: RayDedupOptions) -> Iterator[Any]:
    """Our shuffle strategy and no progress bars for these jobs; the caller's settings restored after."""
    import ray.data
    from ray.data.context import ShuffleStrategy

    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")  # one INFO line per job otherwise (dozens per dedup)
    saved = ctx.shuffle_strategy, ctx.enable_progress_bars, logger.level
    ctx.shuffle_strategy, ctx.enable_progress_bars = ShuffleStrategy(opts.shuffle), False
    logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield ctx
    finally:
        ctx.shuffle_strategy, ctx.enable_progress_bars, level = saved
        logger.setLevel(level)


class _Jobs:
    """Runs the shuffles, materializes each step and sums its STAT rows (one Ray task per block)."""

    def __init__(self, opts: RayDedupOptions, n_parts: int) -> None:
        self.opts = opts
        self.p = n_parts
        self.log: list[dict[str, Any]] = []

    def shuffle(self, name: str, ds: Any, fn: Any, **kw: Any) -> Any:
        out = ds.groupby("_p", num_partitions=self.p).map_groups(fn, batch_format="numpy", fn_kwargs=kw).materialize()
        stats = self._stats(out)
        stats["job"] = name
        self.log.append(stats)
        return out

    @staticmethod
    def _stats(ds: Any) -> dict[str, int]:
        import ray

        @ray.remote(num_cpus=0.1)
        def block_stats(block: Any) -> list[tuple[int, int]]:
            import pyarrow as pa

            t = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            if "t" not in t.column_names:
                return []
            tags = t.column("t").to_numpy()
            m = tags == STAT
            return list(zip(t.column("a").to_numpy()[m].tolist(), t.column("b").to_numpy()[m].tolist(), strict=True))

        refs = [r for bundle in ds.iter_internal_ref_bundles() for r in bundle.block_refs]
        out: dict[str, int] = {}
        for pairs in ray.get([block_stats.remote(r) for r in refs]):
            for code, value in pairs:
                name = STATS[code]
                out[name] = max(out.get(name, 0), value) if code in _MAX_CODES else out.get(name, 0) + value
        return out

    def summary(self) -> dict[str, Any]:
        total = {"bytes_shuffled": sum(j.get("bytes_in", 0) for j in self.log),
                 "max_partition_bytes": max((j.get("max_partition_bytes", 0) for j in self.log), default=0),
                 "max_worker_rss": max((j.get("max_worker_rss", 0) for j in self.log), default=0),
                 "partitions": self.p, "jobs": self.log}
        return total


def _partitions(opts: RayDedupOptions, n: int, num_perm: int, bands: int) -> int:
    """P: the largest job (a signature per record, or rounds*bands band rows) split into
    `partition_bytes` pieces, at least twice the cluster's CPUs."""
    if opts.partitions:
        return opts.partitions
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    biggest = n * max(4 * num_perm + 64, 34 * bands)  # a node row with its signature; 34 B per band row
    return max(2 * cpus, math.ceil(biggest / opts.partition_bytes))


def _dedup(rows: Any, n: int, near: bool, num_perm: int, bands: int, rows_per_band: int, rounds: int,
           verify: float, opts: RayDedupOptions, prepare: Any, prepare_kw: dict[str, Any],
           require_tokens: bool = True, collect_edges: bool = False) -> Any:
    """The exact, bucket, verify, component and keeper jobs; a materialized dataset of DUP rows
    (``a`` = removed gid, ``b`` = kept gid, ``c`` = EXACT_STEP | NEAR_STEP, ``k`` = equal minima)."""
    n_parts = _partitions(opts, n, num_perm, rounds * bands)
    jobs = _Jobs(opts, n_parts)

    def take(ds: Any, *tags: int) -> Any:
        return ds.map_batches(_take, batch_format="numpy", fn_kwargs={"tags": tags})

    extra = {"batch_size": 1} if prepare is _read_shard else {}  # one task per shard file
    rows = rows.map_batches(prepare, batch_format="numpy", fn_kwargs={**prepare_kw, "n_parts": n_parts}, **extra)
    exact = jobs.shuffle("exact", rows, _exact, near=near, n_parts=n_parts, require_tokens=require_tokens)
    results = [take(exact, DUP)]
    if near:
        nodes = take(exact, NODE).materialize()
        band_rows = nodes.map_batches(_band_rows, batch_format="numpy", fn_kwargs={
            "bands": bands, "rows": rows_per_band, "rounds": rounds, "n_parts": n_parts})
        edges = take(jobs.shuffle("buckets", band_rows, _buckets, n_parts=n_parts), EDGE)
        low = jobs.shuffle("verify_low", edges.union(nodes) if verify > 0 else edges, _verify_low,
                           n_parts=n_parts, verify=verify)
        low = take(low, EDGE)
        star = take(jobs.shuffle("verify_high", low.union(nodes) if verify > 0 else low, _verify_high,
                                 n_parts=n_parts, verify=verify), EDGE).materialize()
        if collect_edges:
            t = star.to_pandas()
            e = t[t["a"] < t["b"]][["a", "b"]].to_numpy(dtype=np.int64)
            opts.stats["_edges"] = e[np.lexsort((e[:, 1], e[:, 0]))] if len(e) else np.zeros((0, 2), np.int64)
        for rnd in range(opts.max_rounds):
            large = jobs.shuffle(f"large_star_{rnd}", star, _large_star, n_parts=n_parts)
            if jobs.log[-1].get("violations", 0) == 0:  # its input was already stars around the minima
                break
            star = take(jobs.shuffle(f"small_star_{rnd}", take(large, EDGE), _small_star, n_parts=n_parts), EDGE)
        else:
            raise RuntimeError(f"dedup_ray: connected components did not converge in {opts.max_rounds} rounds")
        labels = jobs.shuffle("label", star.union(nodes), _label, n_parts=n_parts)
        results.append(take(jobs.shuffle("keep", take(labels, NODE), _keep), DUP))
    summary = jobs.summary()
    for k in ("exact_dups", "candidates", "verified", "near_clusters"):
        summary[k] = sum(j.get(k, 0) for j in jobs.log)
    summary["rounds"] = sum(j["job"].startswith("large_star") for j in jobs.log)
    opts.stats.update(summary)
    out = results[0] if len(results) == 1 else results[0].union(results[1])
    return out.select_columns(["a", "b", "c", "k"]).materialize()


def _from_arrays(kind: np.ndarray, content_id: np.ndarray, priority: np.ndarray, order: np.ndarray,
                 sigs: np.ndarray | None, blocks: int = 4) -> Any:
    """Records given as arrays -> the dataset the exact job reads (the array API)."""
    import pandas as pd
    import ray.data

    n = len(content_id)
    group = np.array([f"{k}\0{c}" for k, c in zip(kind, content_id, strict=True)], dtype=object)
    s = [r.tobytes() for r in np.ascontiguousarray(sigs, dtype=np.uint32)] if sigs is not None else [b""] * n
    frame = pd.DataFrame({"h": pd.util.hash_array(group).view(np.int64), "gid": np.arange(n, dtype=np.int64),
                          "group": group, "kind": kind, "priority": np.asarray(priority, dtype=np.int64),
                          "order": np.asarray(order, dtype=np.int64), "s": s})
    return ray.data.from_pandas([frame.iloc[i::blocks] for i in range(min(blocks, n))])


def _keyed(batch: dict[str, np.ndarray], n_parts: int) -> dict[str, np.ndarray]:
    """Array-API rows: the exact job's partition from the (kind, content id) hash."""
    out = {k: v for k, v in batch.items() if k != "h"}
    out["_p"] = _part(batch["h"], n_parts)
    return out


def _dup_arrays(dups: Any) -> tuple[np.ndarray, ...]:
    """DUP rows -> (removed gid, kept gid, step, equal minima) int64 arrays (empty when no duplicate)."""
    t = dups.to_pandas()
    return tuple(t[c].to_numpy(dtype=np.int64) if c in t.columns else np.zeros(0, np.int64) for c in "abck")


def _keepers(dups: Any, n: int) -> np.ndarray:
    dup, keep, _, _ = _dup_arrays(dups)
    keeper = np.arange(n, dtype=np.int64)
    keeper[dup] = keep
    return keeper


def exact_groups_ray(content_id: np.ndarray, priority: np.ndarray, order: np.ndarray,
                     opts: RayDedupOptions | None = None) -> np.ndarray:
    """`dedup.exact_groups` on the current Ray cluster: keeper[i] = index of the kept copy of i's
    content (i itself when kept); the kept copy is the smallest (priority, order, index)."""
    opts = opts or RayDedupOptions()
    n = len(content_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    with _data_context(opts):
        ds = _from_arrays(np.full(n, "file", dtype=object), np.asarray(content_id).astype(str).astype(object),
                          priority, order, None)
        return _keepers(_dedup(ds, n, False, 0, 0, 0, 0, 0.0, opts, _keyed, {}), n)


def near_clusters_ray(sigs: np.ndarray, priority: np.ndarray, order: np.ndarray, bands: int = 25, rows: int = 10,
                      rounds: int = 1, verify: float = 0.0, opts: RayDedupOptions | None = None) -> NearResult:
    """`dedup.near_clusters` on the current Ray cluster: same arguments, same `NearResult` (keeper,
    verified edges, clusters with more than one member, candidate pairs).

    Every record takes part, as in the local function (the caller removes exact duplicates and
    all-max signatures first). The edges are collected to return them; `stage2_ray` never does."""
    opts = opts or RayDedupOptions()
    n = len(sigs)
    if n == 0:
        return NearResult(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64), 0)
    ids = np.arange(n).astype(str).astype(object)  # distinct: the exact job keeps every record
    with _data_context(opts):
        ds = _from_arrays(np.full(n, "file", dtype=object), ids, priority, order, sigs)
        dups = _dedup(ds, n, True, sigs.shape[1], bands, rows, rounds, verify, opts, _keyed, {},
                      require_tokens=False, collect_edges=True)
        keeper = _keepers(dups, n)
    edges = opts.stats.pop("_edges")
    return NearResult(keeper, edges, int(opts.stats["near_clusters"]), int(opts.stats["candidates"]))


# --------------------------------------------------------------------------------------- curate stage 2
def stage2_ray(work: str, rank: int = 0, world_size: int = 1, opts: RayDedupOptions | None = None,
               address: str = "") -> dict[str, Any]:
    """`pipeline.stage2` on the Ray cluster this process is connected to (else the one at `address`,
    else a new local instance): the same ``OUT/dedup_clusters.parquet``,
    ``.work/s2/decisions.parquet`` and summary, byte for byte. Call it in the driver (not inside a Ray
    task: its jobs need the cluster's CPUs). The driver holds the shard offsets and, at the end, the
    duplicate rows it writes (one per removed record), never the signatures or the candidate pairs."""
    import pyarrow.parquet as pq
    import ray
    import ray.data

    from domainfm.code.curate import stages
    from domainfm.code.curate.config import CurateConfig

    opts = opts or RayDedupOptions()
    wd = Path(work)
    plan = stages.load_plan(wd)
    cfg = CurateConfig(**plan["config"])
    paths = [wd / "s1" / f"kept-{r:05d}.parquet" for r in range(len(plan["shards"]))]
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    n = int(offsets[-1])
    near = bool(cfg.near_dedup and n)
    if n == 0:  # nothing survived stage 1: the local stage's empty tables, no cluster needed
        _write_stage2(plan, wd, [], [])
        return {"files": 0, "exact_clusters": 0, "near_clusters": 0}
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    with _data_context(opts):
        items = ray.data.from_items([{"path": str(p), "offset": int(o), "sig": str(p.parent / f"sig-{r:05d}.npy")}
                                     for r, (p, o) in enumerate(zip(paths, offsets, strict=False))],
                                    override_num_blocks=max(1, len(paths)))
        dup, keep, step, equal = _dup_arrays(_dedup(
            items, n, near, cfg.num_perm, cfg.bands, cfg.rows, cfg.lsh_rounds, cfg.verify_jaccard, opts, _read_shard,
            {"num_perm": cfg.num_perm, "ngram": cfg.ngram, "near": near}))
    meta = _metadata(paths, offsets, np.unique(np.concatenate([dup, keep])))
    kind_of = meta["kind"]
    # the local order: exact decisions by index, then near ones by kind (sorted) and index
    o = np.lexsort((dup, np.array([kind_of[g] if s == NEAR_STEP else "" for g, s in zip(dup, step, strict=True)]),
                    step))
    decisions, clusters = [], []
    for i in o:
        d, k, near_step = int(dup[i]), int(keep[i]), step[i] == NEAR_STEP
        name = "near_dedup" if near_step else "exact_dedup"
        sh = int(np.searchsorted(offsets, d, side="right") - 1)
        swh, repo, path = meta["swhid"], meta["repo_name"], meta["path"]
        decisions.append({"shard": sh, "row": d - int(offsets[sh]), "step": name,
                          "reason": "near_duplicate" if near_step else "exact_duplicate",
                          "detail": f"kept {swh[k]} {repo[k]}/{path[k]}"})
        clusters.append({"kind": name.split("_")[0], "cluster": swh[k], "kept_swhid": swh[k], "kept_repo": repo[k],
                         "kept_path": path[k], "dup_swhid": swh[d], "dup_repo": repo[d], "dup_path": path[d],
                         "est_jaccard": float(equal[i]) / cfg.num_perm if near_step else 1.0})
    _write_stage2(plan, wd, decisions, clusters)
    stages.kill_point("s2")
    return {"files": n, "exact_clusters": len({c["cluster"] for c in clusters if c["kind"] == "exact"}),
            "near_clusters": int(opts.stats.get("near_clusters", 0))}


def _metadata(paths: list[Path], offsets: np.ndarray, gids: np.ndarray) -> dict[str, dict[int, str]]:
    """swhid, repo_name, path and kind of the given records, one shard file at a time."""
    import pyarrow.parquet as pq

    out: dict[str, dict[int, str]] = {c: {} for c in ("swhid", "repo_name", "path", "kind")}
    shard = np.searchsorted(offsets, gids, side="right") - 1
    for r in np.unique(shard):
        g = gids[shard == r]
        t = pq.read_table(paths[r], columns=list(out)).take(g - offsets[r])
        for c in out:
            vals = t.column(c).to_pylist()
            out[c].update(zip(g.tolist(), [v or "file" for v in vals] if c == "kind" else vals, strict=True))
    return out


def _write_stage2(plan: dict[str, Any], wd: Path, decisions: list[dict], clusters: list[dict]) -> None:
    """The two tables of `pipeline.stage2`, with its schemas."""
    import pyarrow as pa

    from domainfm.core.io import write_parquet

    s = pa.string()
    ds = pa.schema([("shard", pa.int64()), ("row", pa.int64()), ("step", s), ("reason", s), ("detail", s)])
    cs = pa.schema([("kind", s), ("cluster", s), ("kept_swhid", s), ("kept_repo", s), ("kept_path", s),
                    ("dup_swhid", s), ("dup_repo", s), ("dup_path", s), ("est_jaccard", pa.float64())])
    write_parquet(Path(plan["out"]) / "dedup_clusters.parquet", clusters, schema=cs)
    write_parquet(wd / "s2" / "decisions.parquet", decisions, schema=ds)
