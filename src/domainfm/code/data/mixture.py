"""Data mixtures: a weight per source of the curated corpus, applied when packing (`code pack --mixture`).

A *source* is what the curated corpus records about a row: its record kind (`issue`, `pull_request`,
`notebook_structured`, `notebook_script`, written by `code curate`) or, for a plain source file, its
language (`lang:Python`, `lang:Markdown`, ...). A mixture gives each source a weight = the expected number
of copies of each of its rows in the train split (StarCoder2 speaks of epochs):

- ``0`` drops the source (StarCoder2-3B leaves out OpenWebMath, Wikipedia and arXiv);
- a fraction downsamples it (StarCoder2 cut Java from 479.68 GB to 200 GB: weight 200 / 479.68);
- a value above 1 upsamples it: ``2.5`` = every row twice, and half of the rows a third time.

Which rows are kept, and how many copies each gets, is a pure function of (seed, row identity): the row's
SWHID when the corpus has one, else repository + path. The same seed therefore gives the same packed
shards byte for byte, and a different corpus order or sharding gives the same selection.

Weights are looked up from the most to the least specific key: the row's source (`lang:Java`, `issue`),
then its group (`documentation` for the documentation languages StarCoder2 names, `code` for every other
language), then `default` (1.0 unless given). Copies of a repository are built as separate repository
samples (own file order, own metadata and FIM draws); the validation split keeps at most one copy of a row
(a held-out measurement of the natural data, less what the mixture drops).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from domainfm.core.errors import UserError, require
from domainfm.core.registry import Registry

# curated record kinds that are sources of their own (everything else is a file, sourced by language)
KIND_SOURCES = ("issue", "pull_request", "notebook_structured", "notebook_script")
# the documentation languages StarCoder2 adds to the-stack-v2-train-smol (arXiv:2402.19173, section 4,
# "The-stack-v2-train-smol"), in linguist's names
DOC_LANGUAGES = ("AsciiDoc", "HTML", "Markdown", "RDoc", "RMarkdown", "Text", "reStructuredText")
GROUPS = ("code", "documentation")
NO_LANGUAGE = "(none)"


def source_of(kind: str | None, language: str | None) -> str:
    """The source name of a curated row: its kind, or `lang:<language>` for a plain file."""
    if kind in KIND_SOURCES:
        return kind
    return f"lang:{language or NO_LANGUAGE}"


def group_of(source: str) -> str | None:
    if not source.startswith("lang:"):
        return None
    return "documentation" if source[5:] in DOC_LANGUAGES else "code"


@dataclass(frozen=True)
class Mixture:
    """Weights per source (see the module doc); `published` keeps the reference figures of a preset."""

    name: str
    weights: dict[str, float]
    citation: str = ""
    published: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, w in self.weights.items():
            if not (key in ("default", *GROUPS, *KIND_SOURCES) or (key.startswith("lang:") and len(key) > 5)):
                raise UserError(f"mixture {self.name!r}: unknown source {key!r}; use lang:<Language>, "
                                f"{', '.join(KIND_SOURCES)}, {', '.join(GROUPS)} or default")
            if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise UserError(f"mixture {self.name!r}: weight of {key!r} must be a number >= 0 (got {w!r})")

    def weight(self, source: str) -> float:
        if source in self.weights:
            return float(self.weights[source])
        group = group_of(source)
        if group is not None and group in self.weights:
            return float(self.weights[group])
        return float(self.weights.get("default", 1.0))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "weights": {k: float(v) for k, v in sorted(self.weights.items())}}
        if self.citation:
            out["citation"] = self.citation
        return out


def copies(weight: float, seed: int, row_key: str) -> int:
    """Copies of one row: floor(weight), plus one with probability frac(weight) (a seeded hash of the row)."""
    whole = math.floor(weight)
    frac = weight - whole
    if frac <= 0:
        return int(whole)
    digest = hashlib.sha256(f"mixture\x00{seed}\x00{row_key}".encode("utf-8", "surrogatepass")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return int(whole) + (u < frac)


# ---------------------------------------------------------------- presets (published data mixes)
MIXTURES: Registry[Callable[[], Mixture]] = Registry("data mixture")

STARCODER2_CITATION = ("Lozhkov et al. 2024, StarCoder 2 and The Stack v2, arXiv:2402.19173: section 4 "
                       "(Data Composition) and Table 4")
# Table 4: unique tokens (billions) per source and whether the 3B / 7B / 15B trained on it
STARCODER2_TABLE4 = {
    "the-stack-v2-train-smol": (525.5, True, True, False),
    "the-stack-v2-train-full": (775.48, False, False, True),
    "Pull requests": (19.54, True, True, True),
    "Issues": (11.06, True, True, True),
    "Jupyter structured": (14.74, True, True, True),
    "Jupyter scripts": (16.29, True, True, True),
    "Kaggle scripts": (1.68, True, True, True),
    "Documentation": (1.6, True, True, True),
    "OpenWebMath": (14.42, False, True, True),
    "Wikipedia": (6.12, False, True, True),
    "StackOverflow": (10.26, True, True, True),
    "Arxiv": (30.26, False, True, True),
    "LHQ": (5.78, True, True, True),
    "Intermediate Repr.": (6.0, True, True, True),
}
STARCODER2_UNIQUE_TOKENS_B = {"3B": 622.09, "7B": 658.58, "15B": 913.23}
# section 4, "Downsampling languages": observed GB, and the 200 GB both Java and JavaScript were cut to
STARCODER2_OBSERVED_GB = {"Java": 479.68, "JavaScript": 277.25, "C++": 204.49, "Python": 190.99, "PHP": 171.57,
                          "C#": 166.22, "C": 114.49}
STARCODER2_DOWNSAMPLED_GB = {"Java": 200.0, "JavaScript": 200.0}
# section 4, "The-stack-v2-train-smol": the 17 programming languages of the 3B and 7B
STARCODER2_SMOL_LANGUAGES = ("C", "C#", "C++", "Go", "Java", "JavaScript", "Kotlin", "Lua", "PHP", "Python", "R",
                             "Ruby", "Rust", "SQL", "Shell", "Swift", "TypeScript")
# Table 4 rows that a curated corpus carries, as our source names (the others are not produced by `code curate`)
TABLE4_TO_SOURCES = {"Pull requests": "pull_request", "Issues": "issue", "Jupyter structured": "notebook_structured",
                     "Jupyter scripts": "notebook_script"}


def _downsampling() -> dict[str, float]:
    return {f"lang:{lang}": STARCODER2_DOWNSAMPLED_GB[lang] / STARCODER2_OBSERVED_GB[lang]
            for lang in STARCODER2_DOWNSAMPLED_GB}


def _starcoder2(size: str) -> Mixture:
    col = {"3B": 1, "7B": 2, "15B": 3}[size]
    weights: dict[str, float] = {src: 1.0 if STARCODER2_TABLE4[row][col] else 0.0
                                 for row, src in TABLE4_TO_SOURCES.items()}
    if STARCODER2_TABLE4["the-stack-v2-train-full"][col]:  # 15B: all 619 languages
        weights["default"] = 1.0
    else:  # 3B / 7B: the 17 languages + documentation languages of the smol variant, nothing else
        weights["default"] = 0.0
        weights["documentation"] = 1.0
        weights.update({f"lang:{lang}": 1.0 for lang in STARCODER2_SMOL_LANGUAGES})
    weights.update(_downsampling())
    published = {"table4_tokens_b": {k: v[0] for k, v in STARCODER2_TABLE4.items()},
                 "included": {k: v[col] for k, v in STARCODER2_TABLE4.items()},
                 "unique_tokens_b": STARCODER2_UNIQUE_TOKENS_B[size]}
    return Mixture(f"starcoder2-{size.lower()}", weights, STARCODER2_CITATION, published)


for _size in ("3B", "7B", "15B"):
    MIXTURES.register(f"starcoder2-{_size.lower()}", (lambda s=_size: _starcoder2(s)),
                      help=f"StarCoder2-{_size}'s data composition (Table 4, Java/JavaScript downsampling)")
MIXTURES.register("natural", lambda: Mixture("natural", {"default": 1.0}), help="every row once (no mixture)")


def load_mixture(spec: str | Path) -> Mixture:
    """A preset name (`MIXTURES`) or a YAML file: ``{name: ..., weights: {source: weight}}`` or a flat
    ``{source: weight}`` mapping."""
    p = Path(spec)
    if str(spec) in MIXTURES and not p.is_file():
        return MIXTURES.get(str(spec))()
    if not p.is_file():
        raise UserError(f"mixture {spec!r}: neither a preset ({', '.join(MIXTURES.names())}) nor a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of source -> weight")
    if "weights" in data:
        name, weights, citation = str(data.get("name") or p.stem), data["weights"], str(data.get("citation") or "")
    else:
        name, weights, citation = p.stem, data, ""
    if not isinstance(weights, dict) or not weights:
        raise UserError(f"{p}: expected `weights:` with at least one source")
    return Mixture(name, {str(k): v for k, v in weights.items()}, citation)


# ---------------------------------------------------------------- applying a mixture to a corpus
def scan_sources(files: list[Path]) -> dict[tuple[int, int], tuple[str, str]]:
    """(file_idx, row_idx) -> (source, row key) for every row of the corpus (metadata only, streamed)."""
    pq = require("pyarrow.parquet", "code")
    out: dict[tuple[int, int], tuple[str, str]] = {}
    for fi, f in enumerate(files):
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        cols = [c for c in ("swhid", "repo_name", "path", "kind", "language") if c in have]
        row = 0
        for batch in pf.iter_batches(batch_size=65536, columns=cols):
            n = batch.num_rows
            data = {c: batch.column(cols.index(c)).to_pylist() if c in cols else [None] * n
                    for c in ("swhid", "repo_name", "path", "kind", "language")}
            for j, (swhid, repo, path, kind, lang) in enumerate(zip(*data.values(), strict=True)):
                key = swhid or f"{repo or ''}\x00{path or ''}"
                out[(fi, row + j)] = (source_of(kind, lang), key)
            row += n
    return out


def row_copies(sources: dict[tuple[int, int], tuple[str, str]], mix: Mixture, seed: int
               ) -> dict[tuple[int, int], int]:
    """Copies of every row in the train split (the val split caps them at 1)."""
    return {ref: copies(mix.weight(src), seed, key) for ref, (src, key) in sources.items()}


def mixture_entries(repos: list[str], members: dict[str, list[list[int]]], n_copies: dict[tuple[int, int], int],
                    cap: int | None = None) -> list[tuple[str, int, list[list[int]]]]:
    """(repo, copy index, [[file_idx, row_idx, size], ...]) per repository copy: copy k of a repository holds
    the rows with more than k copies. Copy 0 of every repository comes first (in `repos` order), then copy 1
    of those that have one, and so on (the trainer shuffles sequences, so the order only keeps the work
    units contiguous in the corpus)."""
    need = {r: max((n_copies[(fi, ri)] for fi, ri, _ in members[r]), default=0) for r in repos}
    top = max(need.values(), default=0)
    if cap is not None:
        top = min(top, cap)
    out = []
    for k in range(top):
        for r in repos:
            if need[r] > k:
                out.append((r, k, [m for m in members[r] if n_copies[(m[0], m[1])] > k]))
    return out


def mixture_stats(sources: dict[tuple[int, int], tuple[str, str]], n_copies: dict[tuple[int, int], int],
                  split_of: dict[tuple[int, int], str], mix: Mixture) -> dict[str, dict[str, Any]]:
    """Per source: weight, rows, rows dropped (no copy), and rows out (copies) per split. Every row is
    accounted for: rows = kept + dropped in each split."""
    stats: dict[str, dict[str, Any]] = {}
    for ref, (src, _) in sources.items():
        s = stats.setdefault(src, {"weight": mix.weight(src), "rows": 0, "rows_dropped": 0, "train_rows_in": 0,
                                   "train_rows_out": 0, "val_rows_in": 0, "val_rows_out": 0})
        split = split_of[ref]
        c = n_copies[ref] if split == "train" else min(1, n_copies[ref])
        s["rows"] += 1
        s["rows_dropped"] += c == 0
        s[f"{split}_rows_in"] += 1
        s[f"{split}_rows_out"] += c
    return dict(sorted(stats.items()))


__all__ = ["Mixture", "MIXTURES", "load_mixture", "source_of", "copies", "scan_sources", "row_copies",
           "mixture_entries", "mixture_stats", "KIND_SOURCES", "DOC_LANGUAGES"]
