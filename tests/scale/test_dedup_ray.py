"""Dedup on a local Ray cluster (2 CPUs) = the local dedup, decision for decision.

The corpus is real standard-library files plus planted near-duplicates: pairs (one file with every
35th identifier renamed, MinHash Jaccard ~0.75) and chains A ~ B ~ C where A and C are below the
verification threshold on their own (~0.55 < 0.65), so only transitivity puts them in one cluster.
The oracle is a brute-force reference written here: every pair of records sharing an LSH bucket,
kept when its MinHash estimate is >= the threshold, merged by a plain union-find, and in each cluster
the record with the smallest (priority, order, index) kept (the StarCoder/bigcode rule of `dedup.py`).
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from scale_helpers import STDLIB

from domainfm.code.curate.dedup import exact_groups, near_clusters, round_keys
from domainfm.code.curate.dedup_ray import RayDedupOptions, exact_groups_ray, near_clusters_ray, stage2_ray
from domainfm.code.curate.minhash import MinHasher

NAMES = ["textwrap.py", "shlex.py", "difflib.py", "heapq.py", "glob.py", "fnmatch.py", "bisect.py", "queue.py",
         "sched.py", "string.py", "netrc.py", "colorsys.py", "ipaddress.py", "smtplib.py", "ftplib.py", "poplib.py"]
CHAINS = ["textwrap.py", "difflib.py"]  # A ~ B ~ C
PAIRS = ["shlex.py", "heapq.py", "sched.py"]  # A ~ B
_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\b")


def rename(text: str, every: int, offset: int, tag: str) -> str:
    """Rename every `every`-th identifier (from `offset`): a realistic light edit of a copied file."""
    count = 0

    def sub(m: re.Match) -> str:
        nonlocal count
        count += 1
        return f"{tag}{count}" if count % every == offset else m.group(0)

    return _IDENT.sub(sub, text)


def planted() -> tuple[list[str], list[str], dict[str, list[int]]]:
    """(names, texts, groups): originals, edited copies and chains; `groups[name]` = their indices."""
    names, texts, groups = [], [], {}
    for name in NAMES:
        a = (STDLIB / name).read_text()
        names.append(name)
        texts.append(a)
        groups[name] = [len(texts) - 1]
        if name in PAIRS or name in CHAINS:
            b = rename(a, 35, 0, "zq")
            names.append(f"{name}~b")
            texts.append(b)
            groups[name].append(len(texts) - 1)
            if name in CHAINS:
                names.append(f"{name}~c")
                texts.append(rename(b, 35, 17, "zr"))
                groups[name].append(len(texts) - 1)
    return names, texts, groups


def reference_keepers(sigs: np.ndarray, priority: np.ndarray, order: np.ndarray, bands: int, rows: int,
                      rounds: int, verify: float) -> np.ndarray:
    """Brute force: all pairs of each LSH bucket, MinHash estimate >= verify, union-find, min rule."""
    keys = round_keys(sigs, bands, rows, rounds)
    buckets: dict[tuple[int, int], list[int]] = {}
    for i in range(len(sigs)):
        for band in range(keys.shape[1]):
            buckets.setdefault((band, int(keys[i, band])), []).append(i)
    parent = list(range(len(sigs)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for members in buckets.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                i, j = members[x], members[y]
                if verify == 0 or float(np.mean(sigs[i] == sigs[j])) >= verify:
                    parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for i in range(len(sigs)):
        comps.setdefault(find(i), []).append(i)
    keeper = np.arange(len(sigs))
    for members in comps.values():
        best = min(members, key=lambda i: (priority[i], order[i], i))
        keeper[members] = best
    return keeper


@pytest.fixture(scope="module")
def corpus_sigs() -> tuple[list[str], np.ndarray, dict[str, list[int]], np.ndarray, np.ndarray]:
    names, texts, groups = planted()
    sigs = MinHasher().signatures(texts)
    rng = np.random.default_rng(7)
    priority = rng.integers(0, 2, len(texts))  # permissive first: the kept copy is not always the original
    order = rng.permutation(len(texts)).astype(np.int64)
    return names, sigs, groups, priority, order


def test_near_clusters_ray_equals_local_and_brute_force(ray_address, corpus_sigs):
    """The curate defaults: 3 bandings of 25 x 10, candidates verified at an estimate >= 0.65."""
    names, sigs, groups, priority, order = corpus_sigs
    rounds, verify = 3, 0.65
    opts = RayDedupOptions(partitions=3)
    got = near_clusters_ray(sigs, priority, order, rounds=rounds, verify=verify, opts=opts)
    local = near_clusters(sigs, priority, order, rounds=rounds, verify=verify)
    np.testing.assert_array_equal(got.keeper, local.keeper)
    np.testing.assert_array_equal(got.edges, local.edges)
    assert (got.n_clusters, got.n_candidates) == (local.n_clusters, local.n_candidates)
    np.testing.assert_array_equal(got.keeper, reference_keepers(sigs, priority, order, 25, 10, rounds, verify))
    # the planted structure: every pair and chain is one cluster, nothing else is
    assert got.n_clusters == len(PAIRS) + len(CHAINS)
    for name, members in groups.items():
        assert len(set(got.keeper[members])) == 1, name
        if len(members) == 1:
            assert got.keeper[members[0]] == members[0], name
    assert opts.stats["rounds"] >= 1 and opts.stats["bytes_shuffled"] > sigs.nbytes


def test_chain_is_joined_only_through_its_middle(corpus_sigs):
    """The chain premise of the test above: A ~ B and B ~ C verify, A ~ C alone does not."""
    _, sigs, groups, _, _ = corpus_sigs
    for name in CHAINS:
        a, b, c = groups[name]
        est = {p: float(np.mean(sigs[p[0]] == sigs[p[1]])) for p in ((a, b), (b, c), (a, c))}
        assert est[(a, b)] >= 0.65 and est[(b, c)] >= 0.65 and est[(a, c)] < 0.65, est


def _partitioned(fn, rows: dict, n_parts: int, **kw) -> dict:
    """One shuffle step without Ray: `fn` on the rows of each non-empty partition, outputs concatenated."""
    outs = [fn({k: v[rows["_p"] == p] for k, v in rows.items()}, n_parts=n_parts, **kw)
            for p in range(n_parts) if (rows["_p"] == p).any()]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


@pytest.mark.parametrize("graph", ["path", "random", "stars"])
def test_large_star_small_star_finds_the_components(graph):
    """The component rounds (the per-partition functions, shuffled by hand) against a union-find; a
    path of 300 nodes in shuffled order needs O(log n) rounds, not n."""
    from domainfm.code.curate.dedup_ray import _CODE, EDGE, STAT, _large_star, _part, _small_star

    rng = np.random.default_rng(11)
    n = 300
    ids = rng.permutation(n) * 7 + 3  # sparse, unordered gids
    if graph == "path":
        a, b = ids[:-1], ids[1:]
    elif graph == "random":
        a, b = rng.choice(ids, 260), rng.choice(ids, 260)
    else:
        hubs = rng.choice(ids, 5, replace=False)
        a, b = rng.choice(hubs, 200), rng.choice(ids, 200)
    keep = a != b
    a, b = a[keep], b[keep]
    parent = {int(i): int(i) for i in ids}

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        parent[find(x)] = find(y)
    x, y = np.concatenate([a, b]), np.concatenate([b, a])
    rows = {"_p": _part(x, 3), "t": np.full(len(x), EDGE, np.int8), "a": x, "b": y}
    rounds = 0
    while True:
        rounds += 1
        large = _partitioned(_large_star, rows, 3)
        stat = large["t"] == STAT
        if large["b"][stat & (large["a"] == _CODE["violations"])].sum() == 0:
            break
        assert rounds < 30
        small = _partitioned(_small_star, {k: v[large["t"] == EDGE] for k, v in large.items()}, 3)
        rows = {k: v[small["t"] == EDGE] for k, v in small.items()}
    root = {int(i): int(i) for i in ids}
    for u, v in zip(rows["a"].tolist(), rows["b"].tolist(), strict=True):
        root[u] = min(root[u], v)
    comps: dict[int, list[int]] = {}
    for i in ids.tolist():
        comps.setdefault(find(i), []).append(i)
    for members in comps.values():
        assert {root[m] for m in members} == {min(members)}
    assert rounds <= 2 * int(np.log2(n)) + 2


def test_exact_groups_ray_keeps_the_local_copy(ray_address):
    rng = np.random.default_rng(3)
    n = 400
    content = rng.integers(0, 60, n).astype(str)
    priority = rng.integers(0, 2, n)
    order = rng.integers(0, 40, n)  # ties in (priority, order): the smaller index wins, as locally
    got = exact_groups_ray(content, priority, order, RayDedupOptions(partitions=3))
    np.testing.assert_array_equal(got, exact_groups(content, priority, order))
    for c in np.unique(content):
        idx = np.flatnonzero(content == c)
        assert set(got[idx]) == {min(idx, key=lambda i: (priority[i], order[i], i))}


def test_stage2_ray_writes_the_local_decisions(ray_address, tmp_path):
    """A curation run with exact copies across repositories and planted near-duplicates: `stage2_ray`
    (signatures recomputed per task from the shard files) writes the same bytes as the local stage 2."""
    import pyarrow.parquet as pq

    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.dedup_ray import _read_shard
    from domainfm.code.curate.pipeline import curate

    names, texts, _ = planted()
    src = tmp_path / "src"
    for i, (name, text) in enumerate(zip(names, texts, strict=True)):
        repo = src / ["alice", "bob", "carol"][i % 3]
        repo.mkdir(parents=True, exist_ok=True)
        stem, _, copy = name.partition("~")
        (repo / (f"{copy}_{stem}" if copy else stem)).write_text(text)
    shutil.copytree(src / "alice", src / "dave")  # exact copies in another repository and shard
    for repo in src.iterdir():
        shutil.copy(STDLIB / "LICENSE.txt", repo / "LICENSE")
    out = tmp_path / "out"
    cfg = CurateConfig(sources=[str(src)], out=str(out), layout="repos", humaneval=False, mbpp="none",
                       decontam_benchmarks=["none"], files_per_shard=6, keep_work=True)
    curate(cfg)
    work = out / ".work"
    local = {p: p.read_bytes() for p in (out / "dedup_clusters.parquet", work / "s2" / "decisions.parquet")}
    clusters = pq.read_table(out / "dedup_clusters.parquet").to_pylist()
    assert {c["kind"] for c in clusters} == {"exact", "near"}
    sig_files = sorted((work / "s1").glob("sig-*.npy"))
    assert len(sig_files) > 2
    for p in sig_files:  # signatures computed per task from the shard's content: the stage-1 bits
        rows = _read_shard({"path": np.array([str(p.with_name(p.name.replace("sig", "kept")).with_suffix(".parquet"))]),
                            "offset": np.array([0]), "sig": np.array([""])}, 256, 5, True, 4)
        np.testing.assert_array_equal(np.frombuffer(b"".join(rows["s"]), np.uint32).reshape(-1, 256), np.load(p))
        p.unlink()
    for p in local:
        p.unlink()
    opts = RayDedupOptions(partitions=3)
    summary = stage2_ray(str(work), opts=opts)
    for p, data in local.items():
        assert p.read_bytes() == data, p.name
    assert summary["near_clusters"] == len(PAIRS) + len(CHAINS)
    assert summary["files"] == sum(pq.ParquetFile(p).metadata.num_rows for p in (work / "s1").glob("kept-*.parquet"))
