"""Language-detection census of a source tree: how many files get a language, how many languages, and
what the content-ambiguous extensions (``.h``, ``.m``, ``.pl``, ``.ts`` ...) resolve to.

    .venv/bin/python benchmarks/bench_languages.py .venv/lib/python3.11/site-packages
    # compare with an older languages.py (e.g. before the linguist heuristics):
    git show 221a641:src/domainfm/code/curate/languages.py > /tmp/old_languages.py
    .venv/bin/python benchmarks/bench_languages.py .venv/lib/python3.11/site-packages --baseline /tmp/old_languages.py

The baseline is called as the curation's `read` step called it before (first 200 characters); ours
gets the first 64 KiB, as the `sources` step does for ambiguous extensions.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections import Counter
from pathlib import Path

from domainfm.code.curate.languages import HEURISTIC_CHARS, HEURISTICS, detect_language

BINARY_SUFFIXES = {".pyc", ".so", ".png", ".jpg", ".gif", ".whl", ".a", ".dll", ".dylib", ".pyd", ".ttf", ".woff",
                   ".woff2", ".ico", ".npz", ".npy", ".gz", ".zip", ".pt", ".pkl"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--baseline", type=Path, help="an older languages.py to compare with")
    args = ap.parse_args()
    old = None
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_languages", args.baseline)
        assert spec and spec.loader
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    n = with_lang = with_old = 0
    langs: Counter = Counter()
    old_langs: Counter = Counter()
    ambiguous: Counter = Counter()
    t0 = time.perf_counter()
    for p in sorted(args.root.rglob("*")):
        if not p.is_file() or p.suffix.lower() in BINARY_SUFFIXES:
            continue
        n += 1
        text = p.read_bytes()[:HEURISTIC_CHARS].decode("utf-8", "replace")
        lang = detect_language(p.name, text)
        with_lang += lang is not None
        langs[lang] += lang is not None
        if p.suffix.lower() in HEURISTICS:
            ambiguous[(p.suffix.lower(), lang)] += 1
        if old is not None:
            o = old.detect_language(p.name, text[:200])
            with_old += o is not None
            old_langs[o] += o is not None
    dt = time.perf_counter() - t0
    print(f"{n:,} text-like files under {args.root} in {dt:.1f} s")
    print(f"with a language: {with_lang:,}; distinct languages: {len(+langs)}")
    if old is not None:
        print(f"baseline: with a language: {with_old:,}; distinct languages: {len(+old_langs)}")
        gained = Counter({k: v for k, v in langs.items() if k not in old_langs})
        print("languages new to the baseline:", ", ".join(f"{k} {v}" for k, v in gained.most_common(15)))
    print("ambiguous extensions:")
    for (ext, lang), c in sorted(ambiguous.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"  {ext:5} {lang!s:16} {c:,}")


if __name__ == "__main__":
    main()
