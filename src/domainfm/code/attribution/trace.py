"""Trace a snippet back to the training data: membership verdict + the top-k matching training files.

`Tracer(index).trace(text)` answers with a JSON-ready dict (the CLI's `--json` and the server's
`/v1/trace` give exactly this):

    membership   n_ngrams, n_hits, fraction, longest_span_chars / _start / _end (characters of the snippet)
    hits         [{rank, score (BM25), verbatim_overlap, swhid, repo_name, path, language, license_type, licenses, shard, row,
                   lines: [{line, start, end, kind, snippet_line}]}]   (offsets: characters in the file)

A file line matches when, with whitespace collapsed, it equals a line of the snippet (`exact`), or when
its code terms (see `fulltext.code_terms`) overlap those of a snippet line with Jaccard >= 0.6
(`similar`, which catches renamed identifiers and changed quoting). Lines with fewer than 3 distinct terms or
fewer than 8 characters are not matched alone (a `}` or `return x` would match everything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from domainfm.code.attribution.fulltext import Hit, code_terms, query_terms
from domainfm.code.attribution.index import load_shards
from domainfm.code.attribution.membership import membership
from domainfm.core.errors import UserError

SIMILAR_JACCARD = 0.6
RERANK_FACTOR = 4  # candidates per shard = RERANK_FACTOR * top_k, re-ranked by verbatim overlap
PROBES = 16  # snippet windows searched verbatim in each candidate


def _norm(line: str) -> str:
    return " ".join(line.split())


def _meaningful(norm: str, terms: set[str]) -> bool:
    return len(norm) >= 8 and len(terms) >= 3


def matching_lines(snippet: str, content: str) -> list[dict[str, Any]]:
    """The lines of `content` that match a line of `snippet` (exact, else similar), with char offsets."""
    snip = []
    for j, line in enumerate(snippet.splitlines()):
        norm, terms = _norm(line), set(code_terms(line))
        if _meaningful(norm, terms):
            snip.append((j, norm, terms))
    if not snip:
        return []
    exact = {norm: j for j, norm, _ in reversed(snip)}
    union = set().union(*(t for _, _, t in snip))
    out, pos = [], 0
    for i, line in enumerate(content.splitlines(keepends=True), 1):
        start, pos = pos, pos + len(line)
        body = line.rstrip("\r\n")
        norm = _norm(body)
        if not norm:
            continue
        if norm in exact:
            out.append({"line": i, "start": start, "end": start + len(body), "kind": "exact",
                        "snippet_line": exact[norm]})
            continue
        terms = set(code_terms(body))
        # J(T, S_j) <= |T & S_j| / |T| <= |T & union| / |T|: most lines are ruled out by this bound alone
        if not _meaningful(norm, terms) or len(terms & union) < SIMILAR_JACCARD * len(terms):
            continue
        best = max(((len(terms & t) / len(terms | t), j) for j, _, t in snip), default=(0.0, -1))
        if best[0] >= SIMILAR_JACCARD:
            out.append({"line": i, "start": start, "end": start + len(body), "kind": "similar",
                        "snippet_line": best[1]})
    return out


def verbatim_probes(text: str, width: int, n: int = PROBES) -> list[str]:
    """Up to `n` windows of `width` characters at evenly spaced offsets of the snippet (all of it if shorter).

    Searching these as substrings of a candidate file (C `memmem`) measures verbatim overlap at a fraction
    of the cost of hashing every n-gram of a large file.
    """
    if not text.strip():
        return []
    if len(text) <= width:
        return [text]
    starts = np.unique(np.linspace(0, len(text) - width, num=min(n, len(text) - width + 1)).astype(int))
    return [text[s:s + width] for s in starts]


class Tracer:
    """Opens an index once (all shards), then answers `trace` calls."""

    def __init__(self, index: Path) -> None:
        self.index = Path(index)
        self.manifest, self.shards = load_shards(self.index)
        self.width = int(self.manifest["width"])
        self.stride = int(self.manifest["stride"])

    def check_snippet(self, text: str) -> str | None:
        """Why `text` cannot be traced (None when it can): the clear answer for empty or binary input."""
        if not text.strip():
            return "the snippet is empty"
        if "\x00" in text:
            return "the snippet looks binary (it contains NUL bytes)"
        return None

    def search(self, text: str, top_k: int = 5) -> list[tuple[float, Hit]]:
        """The top-k training files for `text`: (verbatim overlap, hit), best first.

        BM25 scores of different shards are not comparable (each shard has its own term statistics), and
        BM25 does not reward verbatim order, so the top `RERANK_FACTOR * top_k` candidates of each shard are
        ranked by their verbatim overlap with the snippet (the share of `verbatim_probes` found in them by
        substring search), then by BM25 (renamed copies share no probe and keep BM25's order).
        """
        terms = query_terms(text)
        hits = [h for shard in self.shards for h in shard.fulltext.search(terms, top_k * RERANK_FACTOR)]
        probes = verbatim_probes(text, self.width)
        scored = []
        for h in hits:
            content = h.fields["content"]
            overlap = sum(p in content for p in probes) / len(probes) if probes else 0.0
            scored.append((overlap, h))
        scored.sort(key=lambda oh: (-oh[0], -oh[1].score, oh[1].fields["shard"], oh[1].fields["row"]))
        return scored[:top_k]

    def trace(self, text: str, top_k: int = 5, with_content: bool = False) -> dict[str, Any]:
        if top_k < 1:
            raise UserError(f"--top-k must be at least 1 (got {top_k})")
        reason = self.check_snippet(text)
        if reason:
            return {"error": reason, "membership": None, "hits": []}
        nbytes = len(text.encode("utf-8"))
        mem = membership(text, [s.bloom for s in self.shards], self.width, self.stride)
        result: dict[str, Any] = {"membership": mem.to_dict(), "ngram_width": self.width, "hits": []}
        if nbytes < self.width:
            result["note"] = (f"the snippet is {nbytes} bytes, shorter than the n-gram width {self.width}: "
                              f"no membership verdict; full-text hits only")
        for rank, (overlap, hit) in enumerate(self.search(text, top_k), 1):
            fields = dict(hit.fields)
            content = fields.pop("content")
            entry = {"rank": rank, "score": round(hit.score, 4), "verbatim_overlap": round(overlap, 4), **fields,
                     "lines": matching_lines(text, content)}
            if with_content:
                entry["content"] = content
            result["hits"].append(entry)
        return result


def render(result: dict[str, Any], color: bool) -> str:
    """The terminal form of one trace: verdict line, then each hit with its matching lines highlighted."""
    if result.get("error"):
        return f"cannot trace: {result['error']}"
    style = {"exact": "\033[1;33m", "similar": "\033[36m"} if color else {}
    reset = "\033[0m" if color else ""
    lines = []
    mem = result["membership"]
    if result.get("note"):
        lines.append(result["note"])
    else:
        lines.append(f"membership: {mem['n_hits']}/{mem['n_ngrams']} n-grams of {result['ngram_width']} bytes "
                     f"in the training data ({100 * mem['fraction']:.1f}%); longest covered span "
                     f"{mem['longest_span_chars']} characters"
                     + (f" at [{mem['longest_span_start']}, {mem['longest_span_end']})" if mem["n_hits"] else ""))
    if not result["hits"]:
        lines.append("no matching training file")
    for hit in result["hits"]:
        lines.append(f"#{hit['rank']} verbatim {100 * hit['verbatim_overlap']:.0f}% bm25 {hit['score']:.1f}  "
                     f"{hit['repo_name']}/{hit['path']}  "
                     f"{hit['swhid']}  license {hit['licenses'] or hit['license_type']}")
        content = hit.get("content")  # present when traced with_content=True
        for m in hit["lines"][:8]:
            text = content[m["start"]:m["end"]] if content else ""
            lines.append(f"    {m['line']:>5} {style.get(m['kind'], '')}{text.strip()[:100]}{reset}  ({m['kind']})")
        if len(hit["lines"]) > 8:
            lines.append(f"    ... {len(hit['lines']) - 8} more matching lines")
    return "\n".join(lines)


def sample_texts(row: dict[str, Any]) -> list[str]:
    """The generated texts of one samples-file row (`code generate` and `code evaluate` layouts)."""
    for key in ("completions", "generations", "samples"):
        value = row.get(key)
        if isinstance(value, list):
            return [str(v) for v in value]
    for key in ("completion", "generation", "text"):
        if isinstance(row.get(key), str):
            return [row[key]]
    return []


def trace_samples(tracer: Tracer, rows: list[dict[str, Any]], min_span: int,
                  top_k: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One result per generated sample plus a summary: how many contain a training span >= `min_span` chars."""
    out, n_copied, n_untraceable = [], 0, 0
    for i, row in enumerate(rows):
        ident = row.get("task_id", row.get("id", i))
        texts = sample_texts(row)
        if not texts:
            raise UserError(f"samples row {i + 1} has no completion(s) / generation(s) field")
        for k, text in enumerate(texts):
            res = tracer.trace(text, top_k=top_k)
            mem = res["membership"]
            span = mem["longest_span_chars"] if mem else 0
            copied = bool(mem) and span >= min_span
            n_copied += copied
            n_untraceable += res.get("error") is not None
            top = res["hits"][0] if res["hits"] else None
            out.append({"id": ident, "sample": k, "chars": len(text), "longest_span_chars": span,
                        "fraction": mem["fraction"] if mem else None, "copied": copied,
                        "error": res.get("error"),
                        "top_hit": None if top is None else {key: top[key] for key in
                                                             ("swhid", "repo_name", "path", "license_type", "score")}})
    summary = {"samples": len(out), "min_span_chars": min_span, "with_training_span": n_copied,
               "untraceable": n_untraceable}
    return out, summary
