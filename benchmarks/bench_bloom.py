"""The membership filter: our cache-line-blocked Bloom filter (numba) vs rbloom, on the same real keys.

Ours is `MembershipFilter` (the blocked filter fed in sorted batches, as `code index` feeds it).
Keys: the 50-byte n-gram hashes of real files (the Python standard library, `--max-mb` MB of text),
inserted into a filter sized for `--fpr`; then the same number of n-grams of files that are not in
the set (site-packages) are looked up. Reported per side: insert and lookup time (median of
`--repeats`, interleaved), keys/s, the filter size, and the measured false-positive rate on n-grams
that are truly absent (checked exactly against the inserted keys).

    .venv/bin/python benchmarks/bench_bloom.py --max-mb 20 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

from domainfm.code.attribution.bloom import BlockedBloom, plan
from domainfm.code.attribution.membership import MembershipFilter
from domainfm.code.attribution.ngrams import ngram_hashes

STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
SITE = Path(sysconfig.get_paths()["purelib"])


def keys_of(root: Path, max_bytes: int, width: int) -> np.ndarray:
    out, total = [], 0
    for p in sorted(root.rglob("*.py")):
        data = p.read_bytes()
        out.append(ngram_hashes(data, width))
        total += len(data)
        if total >= max_bytes:
            break
    return np.concatenate(out)


def _key(x: int) -> int:
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-mb", type=float, default=20)
    ap.add_argument("--fpr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import rbloom

    keys = keys_of(STDLIB, int(args.max_mb * 1e6), 50)
    probe = keys_of(SITE, int(args.max_mb * 1e6), 50)
    absent = probe[~np.isin(probe, keys)]
    print(f"{len(keys):,} keys inserted, {len(absent):,} truly absent keys looked up")
    p = plan(len(keys), args.fpr)
    BlockedBloom(plan(10, args.fpr)).add(keys[:10])  # compile the kernels outside the timing
    times: dict[str, list[float]] = {"ours_add": [], "ours_lookup": [], "rbloom_add": [], "rbloom_lookup": []}
    fp = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = MembershipFilter(len(keys), args.fpr)  # what `code index` uses: sorted batches into the table
        for s in range(0, len(keys), 1 << 20):  # fed about one large file at a time, as the index does
            ours.add(keys[s:s + (1 << 20)])
        ours.flush()
        times["ours_add"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fp["ours"] = float(ours.contains(absent).mean())
        times["ours_lookup"].append(time.perf_counter() - t)
        t = time.perf_counter()
        rb = rbloom.Bloom(len(keys), args.fpr, _key)
        rb.update(keys.tolist())
        times["rbloom_add"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fp["rbloom"] = float(np.fromiter((k in rb for k in absent.tolist()), bool, len(absent)).mean())
        times["rbloom_lookup"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ours:   add {med['ours_add']:.2f} s ({len(keys) / med['ours_add'] / 1e6:.1f} M keys/s), lookup "
          f"{med['ours_lookup']:.2f} s, {p.bytes / 1e6:.1f} MB, k={p.k}, false positives {fp['ours']:.5f} "
          f"(expected {p.fpr:.5f})")
    print(f"rbloom: add {med['rbloom_add']:.2f} s ({len(keys) / med['rbloom_add'] / 1e6:.1f} M keys/s), lookup "
          f"{med['rbloom_lookup']:.2f} s, {rb.size_in_bits / 8e6:.1f} MB, false positives {fp['rbloom']:.5f}")
    print(f"speed-up: add {med['rbloom_add'] / med['ours_add']:.1f}x, lookup "
          f"{med['rbloom_lookup'] / med['ours_lookup']:.1f}x")


if __name__ == "__main__":
    main()
