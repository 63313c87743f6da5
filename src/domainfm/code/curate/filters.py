"""Per-file steps of the first stage: read/decode, language, license + opt-out, StarCoder quality.

Each is a `domainfm.core.steps` Filter/Step: it keeps a record or drops it with a named reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from domainfm.code.curate.encoding import decode
from domainfm.code.curate.generated import generated_reason
from domainfm.code.curate.languages import detect_language
from domainfm.code.curate.licenses import license_type, spdx_headers
from domainfm.core.errors import UserError
from domainfm.core.steps import Filter, Record, Step, StepContext


class Decode(Step):
    """Reading: drop records the reader flagged (unreadable, too large, symlinks...), binary and
    undecodable files; attach `content`, `encoding` and `language`."""

    name = "read"

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            if rec.get("error"):
                ctx.drop(rec, self.name, rec["error"])
                continue
            text, enc = decode(rec.pop("data"))
            if text is None:
                ctx.drop(rec, self.name, enc)
                continue
            rec["content"] = text
            rec["encoding"] = enc
            rec["language"] = detect_language(rec["path"], text[:200])
            yield rec


class LanguageFilter(Filter):
    """Keep files of a known language (optionally only the listed ones)."""

    name = "language"

    def __init__(self, languages: list[str] | None = None) -> None:
        self.languages = {lang.lower() for lang in languages} if languages else None

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        lang = rec.get("language")
        if lang is None:
            return False, "unknown_language"
        if self.languages is not None and lang.lower() not in self.languages:
            return False, "excluded_language"
        return True


def read_opt_out(path: str | Path | None) -> tuple[frozenset[str], frozenset[str]]:
    """Opt-out file: one `owner` or `owner/repo` per line ('#' comments). Returns (owners, repos)."""
    if not path:
        return frozenset(), frozenset()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"opt-out file not found: {p}")
    owners, repos = set(), set()
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip().strip("/")
        if not line:
            continue
        (repos if "/" in line else owners).add(line.lower())
    return frozenset(owners), frozenset(repos)


class LicenseFilter(Filter):
    """Drop license types not allowed (default: keep permissive and no_license) and opted-out repos.
    A file's own `SPDX-License-Identifier:` headers add to the licenses inherited from its directories."""

    name = "license"

    def __init__(self, allowed: Iterable[str] = ("permissive", "no_license"),
                 opt_out_owners: frozenset[str] = frozenset(), opt_out_repos: frozenset[str] = frozenset()) -> None:
        self.allowed = frozenset(allowed)
        self.owners = opt_out_owners
        self.repos = opt_out_repos

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        name = rec["repo_name"].lower()
        if name in self.repos or name.split("/", 1)[0] in self.owners or name in self.owners:
            return False, "opt_out"
        if isinstance(rec.get("content"), str) and "SPDX-License-Identifier" in rec["content"][:4000]:
            lics = sorted(set(rec.get("licenses") or ()) | spdx_headers(rec["content"]))
            rec["licenses"], rec["license_type"] = lics, license_type(lics)
        if rec["license_type"] not in self.allowed:
            return False, rec["license_type"]
        return True


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    p = _VisibleText()
    try:
        p.feed(html)
        p.close()
    except (AssertionError, ValueError):
        pass
    return " ".join(" ".join(p.parts).split())


# StarCoder2's encoded-data filter (The Stack v2 paper, "Encoded data filter"): a file is dropped when
# one match of these is longer than 1024 characters or all matches together exceed 50% of the file
ENCODED_PATTERNS = {
    "base64": re.compile(r"[a-zA-Z0-9+/\n=]{64,}"),
    "hexadecimal": re.compile(r"(?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){8,}"),
    "unicode": re.compile(r"(?:\\u[0-9a-fA-F]{4}){8,}"),
}


def encoded_data(text: str, max_match: int = 1024, max_fraction: float = 0.5) -> str | None:
    """The encoded-data pattern that disqualifies `text` (None: keep)."""
    total = 0
    for name, rx in ENCODED_PATTERNS.items():
        for m in rx.finditer(text):
            n = m.end() - m.start()
            if n > max_match:
                return name
            total += n
    return "fraction" if text and total / len(text) > max_fraction else None


VENDOR_DIRS = frozenset({"vendor", "vendors", "_vendor", "vendored", "node_modules", "third_party", "thirdparty",
                         "third-party", "3rdparty", "bower_components", "external", "extern"})
LOCK_FILES = frozenset({"package-lock.json", "yarn.lock", "pnpm-lock.yaml", "cargo.lock", "poetry.lock",
                        "pipfile.lock", "composer.lock", "gemfile.lock", "go.sum", "uv.lock", "npm-shrinkwrap.json"})


class QualityFilter(Filter):
    """The StarCoder/StarCoder2 data filters: long/odd lines, alphabetic fraction, encoded data, XML,
    HTML with little text, JSON/YAML size, generated files (go-enry's rules), vendored paths and lock
    files. A drop's `_detail` names the rule (e.g. which generator header matched)."""

    name = "quality"

    def __init__(self, max_line_length: int = 1000, max_mean_line_length: float = 100.0,
                 min_alphanum_fraction: float = 0.25, min_alpha_fraction: float = 0.25, json_yaml_min_chars: int = 50,
                 json_yaml_max_chars: int = 5000, html_min_visible_fraction: float = 0.2,
                 html_min_visible_chars: int = 100) -> None:
        self.max_line_length = max_line_length
        self.max_mean_line_length = max_mean_line_length
        self.min_alphanum_fraction = min_alphanum_fraction
        self.min_alpha_fraction = min_alpha_fraction
        self.json_yaml_min_chars = json_yaml_min_chars
        self.json_yaml_max_chars = json_yaml_max_chars
        self.html_min_visible_fraction = html_min_visible_fraction
        self.html_min_visible_chars = html_min_visible_chars

    def filter(self, rec: Record) -> bool | tuple[bool, str]:
        path = PurePosixPath(rec["path"])
        name = path.name.lower()
        if name in LOCK_FILES:
            return False, "lock_file"
        if any(part.lower() in VENDOR_DIRS for part in path.parts[:-1]):
            return False, "vendored"
        text: str = rec["content"]
        lang = rec.get("language")
        if name.endswith((".min.js", ".min.css", "-min.js")):
            return False, "minified"
        if rule := generated_reason(rec["path"], text):
            rec["_detail"] = rule
            return False, "auto_generated"
        if lang in ("JSON", "YAML") and not (self.json_yaml_min_chars <= len(text) <= self.json_yaml_max_chars):
            return False, "json_yaml_size"
        if "<?xml version=" in text[:100]:
            return False, "xml"
        if not text.strip():
            return False, "empty"
        lines = text.splitlines() or [""]
        lengths = [len(line) for line in lines]
        if max(lengths) > self.max_line_length:
            return False, "max_line_length"
        if sum(lengths) / len(lengths) > self.max_mean_line_length:
            return False, "mean_line_length"
        # StarCoder's fractions are per character: str.isalnum (letters and digits) for the basic
        # filter, str.isalpha (letters only) for StarCoder2's alpha filter
        if sum(map(str.isalnum, text)) < self.min_alphanum_fraction * len(text):
            return False, "alphanum_fraction"
        if sum(map(str.isalpha, text)) < self.min_alpha_fraction * len(text):
            return False, "alpha_fraction"
        if kind := encoded_data(text):
            rec["_detail"] = kind
            return False, "encoded_data"
        if lang == "HTML":
            vis = visible_text(text)
            if len(vis) < self.html_min_visible_chars or len(vis) / len(text) < self.html_min_visible_fraction:
                return False, "html_visible_text"
        return True
