"""The full-text index: tantivy (an embedded Lucene-style engine) with BM25 and code-aware tokens.

Code-aware tokenisation: identifiers are split at `snake_case` and `camelCase` boundaries and into
letter / digit runs, then lower-cased, so `computeAverage`, `compute_average` and `COMPUTE_AVERAGE` all
index as `compute average`. Renaming style or re-indenting a file therefore leaves most of its terms,
which is what a user tracing a lightly edited copy needs. The same pattern runs inside tantivy (its
regex tokenizer, Rust `regex` syntax, which has no look-around) and in Python for queries
(`code_terms`), so both sides split identically; a test checks that they agree.

Stored fields: the file text (to show the matching lines) and swhid, repo_name, path, language,
license_type, licenses, shard and row (the file's place in the corpus).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainfm.core.errors import require

# an upper-case letter followed by lower-case ones | a run of upper-case | lower-case | digits
TOKEN_PATTERN = r"[A-Z]?[a-z]+|[A-Z]+|[0-9]+"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
ANALYZER = "code"
META_FIELDS = ("swhid", "repo_name", "path", "language", "license_type", "licenses", "shard")
MAX_QUERY_TERMS = 256  # the most frequent distinct terms of a long snippet (bounded query cost)


def code_terms(text: str) -> list[str]:
    """The terms the index stores for `text`, in order (the Python twin of the tantivy analyzer)."""
    return [t.lower() for t in _TOKEN_RE.findall(text)]


def _analyzer() -> Any:
    tv = require("tantivy", "code")
    return tv.TextAnalyzerBuilder(tv.Tokenizer.regex(TOKEN_PATTERN)).filter(tv.Filter.lowercase()).build()


def _schema() -> Any:
    tv = require("tantivy", "code")
    sb = tv.SchemaBuilder()
    sb.add_text_field("content", stored=True, tokenizer_name=ANALYZER)
    for name in META_FIELDS:
        sb.add_text_field(name, stored=True, tokenizer_name="raw")
    sb.add_unsigned_field("row", stored=True)
    return sb.build()


def open_index(path: Path, create: bool = False) -> Any:
    """A tantivy index in folder `path` with the code analyzer registered (it is not persisted)."""
    tv = require("tantivy", "code")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    index = tv.Index(_schema(), path=str(path), reuse=not create)
    index.register_tokenizer(ANALYZER, _analyzer())
    return index


class FullTextWriter:
    """Adds corpus files to one shard's tantivy index; `close` commits (one commit per shard)."""

    def __init__(self, path: Path, heap_mb: int = 64) -> None:
        self.path = path
        self.heap_mb = heap_mb
        self._writer: Any = None

    def add(self, content: str, meta: dict[str, Any], row: int) -> None:
        tv = require("tantivy", "code")
        if self._writer is None:
            self._writer = open_index(self.path, create=True).writer(heap_size=self.heap_mb << 20, num_threads=1)
        doc = tv.Document()
        doc.add_text("content", content)
        for name in META_FIELDS:
            value = meta.get(name)
            if isinstance(value, list | tuple):
                value = " ".join(map(str, value))
            doc.add_text(name, "" if value is None else str(value))
        doc.add_unsigned("row", int(row))
        self._writer.add_document(doc)

    def close(self) -> None:
        if self._writer is None:  # an empty shard still gets an (empty) index, so it opens like the others
            self._writer = open_index(self.path, create=True).writer(heap_size=self.heap_mb << 20, num_threads=1)
        self._writer.commit()
        self._writer.wait_merging_threads()
        self._writer = None


@dataclass
class Hit:
    score: float
    fields: dict[str, Any]  # META_FIELDS + row + content


def query_terms(text: str, limit: int = MAX_QUERY_TERMS) -> list[str]:
    """The distinct terms of a snippet, most frequent first (ties in order of appearance), at most `limit`."""
    counts = Counter(code_terms(text))
    return [t for t, _ in counts.most_common(limit)]


class FullTextSearcher:
    """BM25 search over one shard's index."""

    def __init__(self, path: Path) -> None:
        self.index = open_index(path)
        self.searcher = self.index.searcher()

    def search(self, terms: list[str], top_k: int) -> list[Hit]:
        tv = require("tantivy", "code")
        if not terms:
            return []
        schema = self.index.schema
        query = tv.Query.boolean_query(
            [(tv.Occur.Should, tv.Query.term_query(schema, "content", t)) for t in terms])
        hits = []
        for score, address in self.searcher.search(query, top_k).hits:
            doc = self.searcher.doc(address)
            fields = {name: (doc.get_first(name) or "") for name in (*META_FIELDS, "content")}
            fields["row"] = int(doc.get_first("row"))
            hits.append(Hit(float(score), fields))
        return hits
