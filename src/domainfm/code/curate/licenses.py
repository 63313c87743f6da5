"""License detection: SPDX ids from license files, package metadata and SPDX headers, inherited downwards.

The Stack v2 rule: a license found in directory D applies to every file below D, and a file is
permissive only when *every* license detected for it is permissive. So declared metadata does not
override license texts at the same level; both count. A declaration we cannot identify (an
unrecognised trove classifier, free text, a LICENSE file whose text no rule knows) is
`LicenseRef-unknown`, which is not permissive; only the absence of any declaration is `no_license`.

- License files are recognised by name only (go-license-detector's base names, which The Stack used,
  with a text extension or none): `LICENSE`, `LICENCE.md`, `COPYING.LESSER`, `LICENSE-MIT`,
  `NOTICE.txt`... but never a source file such as `license.py` or `License.java`.
- SPDX expressions are parsed with `license-expression` (operator precedence, `WITH` exceptions,
  `GPL-2.0+` aliases). An expression is permissive when some choice of its `OR` alternatives is made
  of permissive licenses only: `(MIT OR GPL-2.0) AND LGPL-3.0` is not.
- Package metadata: `*.dist-info/METADATA` / `PKG-INFO` (`License-Expression`, trove classifiers,
  `License:`), `package.json`, `Cargo.toml`, `pyproject.toml`, `setup.cfg`; metadata inside a
  `*.dist-info`/`*.egg-info` folder speaks for the folder that contains it.
- `SPDX-License-Identifier:` headers in a source file add to that file's licenses (`file_licenses`).
The text detector is pluggable (`DETECTORS`): the default phrase rules, or ScanCode
(`domainfm[licenses]`, see `license_scancode.py`).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from email.parser import HeaderParser
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Protocol

from domainfm.core.registry import Registry

UNKNOWN = "LicenseRef-unknown"
PROPRIETARY = "LicenseRef-proprietary"

PERMISSIVE = frozenset({
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "0BSD", "ISC",
    "Unlicense", "CC0-1.0", "Zlib", "PSF-2.0", "Python-2.0", "Python-2.0.1", "BSL-1.0", "HPND", "X11", "WTFPL",
    "NCSA", "PostgreSQL", "UPL-1.0", "CC-BY-4.0", "CC-BY-3.0", "MIT-CMU", "Apache-1.1", "BSD-4-Clause", "AFL-3.0",
    "Artistic-2.0", "ZPL-2.1", "OpenSSL", "Libpng", "libpng-2.0", "Unicode-3.0", "Unicode-DFS-2016",
    "BlueOak-1.0.0", "PIL", "BSD-2-Clause-Patent", "bzip2-1.0.6", "curl", "Zlib-acknowledgement", "MIT-Modern-Variant",
    "BSD-1-Clause", "CNRI-Python", "IJG", "libtiff", "blessing", "NTP", "MIT-open-group", "TCL", "ICU", "HPND-sell-variant",
})

# (SPDX id, all of these phrases present) — checked on lower-cased, whitespace-collapsed text
_TEXT_RULES: list[tuple[str, tuple[str, ...]]] = [
    # full texts (their title + version line) or the standard "under the terms of" notices; a mere
    # mention ("GPL-compatible") is not a license grant
    ("AGPL-3.0", ("gnu affero general public license version 3",)),
    ("AGPL-3.0", ("under the terms of the gnu affero general public license",)),
    ("LGPL-3.0", ("gnu lesser general public license version 3, 29 june 2007",)),
    ("LGPL-2.1", ("gnu lesser general public license version 2.1, february 1999",)),
    ("LGPL-2.0", ("gnu library general public license version 2, june 1991",)),
    ("LGPL-2.1", ("under the terms of the gnu lesser general public license",)),
    ("LGPL-2.0", ("under the terms of the gnu library general public license",)),
    ("GPL-3.0", ("gnu general public license version 3, 29 june 2007",)),
    ("GPL-2.0", ("gnu general public license version 2, june 1991",)),
    ("GPL-3.0", ("under the terms of the gnu general public license as published by the free software "
                 "foundation, either version 3",)),
    ("GPL-2.0", ("under the terms of the gnu general public license as published by the free software "
                 "foundation; either version 2",)),
    ("MPL-2.0", ("mozilla public license version 2.0",)),
    ("MPL-2.0", ("mozilla public license, v. 2.0",)),
    ("MPL-1.1", ("mozilla public license version 1.1",)),
    ("EPL-2.0", ("eclipse public license - v 2.0",)),
    ("EPL-1.0", ("eclipse public license - v 1.0",)),
    ("EUPL-1.2", ("european union public licence v. 1.2",)),
    ("CDDL-1.0", ("common development and distribution license (cddl) version 1.0",)),
    ("Apache-2.0", ("apache license", "version 2.0, january 2004")),
    ("Apache-2.0", ("licensed under the apache license, version 2.0",)),
    ("PSF-2.0", ("python software foundation license version 2",)),
    ("BSL-1.0", ("boost software license - version 1.0",)),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("CC0-1.0", ("cc0 1.0 universal",)),
    ("CC-BY-SA-4.0", ("attribution-sharealike 4.0 international",)),
    ("WTFPL", ("do what the fuck you want to public license",)),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("ISC", ("permission to use, copy, modify, and distribute this software for any purpose with or without fee "
             "is hereby granted, provided that the above copyright notice and this permission notice appear in all "
             "copies",)),
    ("CC0-1.0", ("to the extent possible under law", "dedicated all copyright and related and neighboring rights",
                 "to the public domain worldwide")),
    ("MIT", ("permission is hereby granted, free of charge, to any person obtaining a copy",)),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "names of its contributors")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("Zlib", ("altered source versions must be plainly marked",)),
    ("HPND", ("permission to use, copy, modify, and distribute this software and its documentation for any "
              "purpose and without fee is hereby granted",)),
]
_FAMILIES = {"BSD-3-Clause": "BSD-2-Clause", "LGPL-2.1": "GPL-2.0", "LGPL-3.0": "GPL-3.0"}

# License files: go-license-detector's base names (used for The Stack) + NOTICE/COPYRIGHT/PATENTS,
# optionally qualified (`LICENSE-MIT`, `COPYING.LESSER`, `LICENSE.APACHE2`), with a text extension or none.
_LICENSE_BASE = re.compile(
    r"(?:li[cs]en[cs]es?|legal|copy(?:left|right|ing)|unlicense|notice|patents|"
    r"[al]?gpl(?:[-_ v]?\d(?:\.?\d)?)?|bsd|mit|apache)"
    r"(?:[-_.][a-z0-9]+(?:[-_.][a-z0-9]+)*)?", re.IGNORECASE)
_TEXT_EXTENSIONS = ("", ".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".rtf")
# qualifiers that are file formats of source/data, never a license name: `license.py`, `License.java`
_CODE_EXTENSIONS = frozenset(
    "py pyi pyx pxd js mjs cjs ts tsx jsx java kt kts scala go rs c h cc cpp cxx hpp hh cs fs vb rb php pl pm "
    "sh bash zsh ps1 bat cmd swift m mm lua r jl dart ex exs erl hs ml clj groovy gradle sql json yaml yml toml "
    "xml css scss less vue svelte ini cfg conf properties proto ipynb tex el vim nim zig d f90 f asm s "
    "class jar so dll o a pyc png jpg gif svg pdf".split())
# files that may hold attributions rather than a license: nothing detected -> ignored, not unknown
_NOTICE_NAMES = re.compile(r"^(notice|copyright|legal|patents)", re.IGNORECASE)
METADATA_FILES = {"metadata", "pkg-info", "package.json", "cargo.toml", "setup.cfg", "pyproject.toml"}
SPDX_HEADER = re.compile(r"SPDX-License-Identifier:\s*([^\n\r]*?)\s*(?:\*/|-->|\"\"\"|'''|#\}|$)", re.MULTILINE)


_COMMENT_MARKS = re.compile(r"/\*+|\*+/|^\s*(?:\*|#|//|--|;+|!|%)", re.MULTILINE)
# a license file that only points at others ("either of the licenses found in LICENSE.APACHE or
# LICENSE.BSD"): those files are read themselves, the pointer adds nothing
_POINTER = re.compile(r"\b(?:licen[cs]es?|copying)[-_.][A-Za-z0-9][A-Za-z0-9.]*|\bsee (?:the )?(?:licen[cs]e|copying)",
                      re.IGNORECASE)


def _norm(text: str) -> str:
    """Lower-cased, comment markers (` * `, `#`, `//` at line starts, `/*`, `*/`) removed, whitespace collapsed."""
    return " ".join(_COMMENT_MARKS.sub(" ", text).lower().split())


def is_license_file(path: str) -> bool:
    """A license file by its name: `LICENSE`, `COPYING.txt`, `LICENSE-APACHE`, not `license.py`."""
    name = PurePosixPath(path).name
    low = name.lower()
    for ext in _TEXT_EXTENSIONS[1:]:
        if low.endswith(ext):
            name = name[: -len(ext)]
            break
    if not _LICENSE_BASE.fullmatch(name):
        return False
    last = name.rsplit(".", 1)[1].lower() if "." in name else ""
    return last not in _CODE_EXTENSIONS


# ---------------------------------------------------------------------------------------------
# text detectors (registry: the phrase rules here, ScanCode in license_scancode.py)

class TextDetector(Protocol):
    def __call__(self, text: str) -> set[str]: ...


DETECTORS: Registry[Callable[[], TextDetector]] = Registry("license detector")


def detect_text(text: str) -> set[str]:
    """SPDX ids whose distinctive phrases all occur in a license text (several for bundled texts)."""
    t = _norm(text)
    found: set[str] = set()
    for spdx, phrases in _TEXT_RULES:
        if all(p in t for p in phrases):
            found.add(spdx)
    for strong, weak in _FAMILIES.items():  # BSD-3 implies the BSD-2 phrase; LGPL texts cite the GPL
        if strong in found:
            found.discard(weak)
    return found


DETECTORS.register("rules", lambda: detect_text, help="phrase rules on license texts (default, no dependency)")


def get_detector(name: str = "rules") -> TextDetector:
    if name == "scancode":
        import domainfm.code.curate.license_scancode  # noqa: F401  (registers "scancode")
    return DETECTORS.get(name)()


# ---------------------------------------------------------------------------------------------
# declarations: SPDX expressions and free text

@lru_cache(maxsize=1)
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _base_id(key: str) -> str:
    return re.sub(r"(-only|-or-later|\+)$", "", key)


def is_permissive_id(key: str) -> bool:
    """On the permissive list, or a detector's own permissive LicenseRef (`LicenseRef-permissive-...`)."""
    return key in PERMISSIVE or _base_id(key) in PERMISSIVE or key.startswith("LicenseRef-permissive-")


# free-text families, first match wins: copyleft and proprietary before the permissive names, so
# "GPL-compatible MIT" style mixtures are never read as permissive
_FAMILY_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), s) for p, s in [
    (r"affero|\bagpl", "AGPL"), (r"lesser|library general|\blgpl", "LGPL"),
    (r"general public licen[cs]e|\bgpl", "GPL"), (r"mozilla|\bmpl\b|\bmpl[- ]?\d", "MPL"),
    (r"\beupl|european union public", "EUPL-1.2"), (r"eclipse|\bepl\b|\bepl-", "EPL"),
    (r"\bcddl|common development and distribution", "CDDL-1.0"), (r"\bsspl|server side public", "SSPL-1.0"),
    (r"sharealike|share-alike|\bcc[- ]by[- ]sa", "CC-BY-SA-4.0"), (r"noncommercial|\bcc[- ]by[- ]nc", "CC-BY-NC-4.0"),
    (r"proprietary|commercial|all rights reserved|unlicensed\b", PROPRIETARY),
    (r"\bunlicense\b|public domain", "Unlicense"), (r"\bcc0", "CC0-1.0"), (r"\bisc\b", "ISC"),
    (r"\bmit\b|\bexpat\b", "MIT"), (r"\bapache\b", "Apache"), (r"\bbsd\b|berkeley", "BSD"),
    (r"python software foundation|\bpsf", "PSF-2.0"), (r"\bzlib|libpng", "Zlib"), (r"boost|\bbsl\b", "BSL-1.0"),
    (r"\bhpnd\b|historical permission", "HPND"), (r"\bzope\b|\bzpl\b", "ZPL-2.1"), (r"artistic", "Artistic-2.0"),
    (r"wtfpl", "WTFPL"), (r"universal permissive|\bupl\b", "UPL-1.0"), (r"\b0bsd\b|zero-clause bsd", "0BSD"),
]]
_VERSION = re.compile(r"(?:v|version|-|\s|^)(\d)(?:\.(\d))?")
_ABSENT = re.compile(r"^(?:unknown|none|n/a|see\b.*|refer to\b.*|licen[cs]e(?:\.\w+)?|copying(?:\.\w+)?|"
                     r"file:.*|see license in .*|other)$", re.IGNORECASE)


def _versioned(family: str, low: str) -> str:
    m = _VERSION.search(low.replace("gplv", "gpl v").replace("mplv", "mpl v"))
    major, minor = (m.group(1), m.group(2)) if m else (None, None)
    later = bool(re.search(r"\+|or[- ]later|or any later", low))
    if family in ("GPL", "AGPL", "LGPL"):
        later = later or major is None  # an unversioned GPL allows any version
        if family == "AGPL":
            ver = "3.0" if major in (None, "3") else f"{major}.0"
        elif family == "LGPL":
            ver = {"3": "3.0", "2": "2.1" if minor in (None, "1") else "2.0"}.get(major or "", "2.0")
        else:
            ver = f"{major}.0" if major in ("1", "2", "3") else "1.0"
        return f"{family}-{ver}-{'or-later' if later else 'only'}"
    if family == "MPL":
        return "MPL-1.1" if major == "1" else "MPL-2.0"
    if family == "EPL":
        return "EPL-1.0" if major == "1" else "EPL-2.0"
    if family == "Apache":
        return "Apache-1.1" if major == "1" else "Apache-2.0"
    if family == "BSD":
        if re.search(r"\b0\b|zero", low):
            return "0BSD"
        two = re.search(r"\b2[- ]?clause|simplified|freebsd|two[- ]clause", low)
        four = re.search(r"\b4[- ]?clause|original bsd", low)
        return "BSD-2-Clause" if two else "BSD-4-Clause" if four else "BSD-3-Clause"
    return family


def guess_free_text(value: str) -> str:
    """One short license name in free text or a trove classifier leaf -> an SPDX id (or UNKNOWN)."""
    low = " ".join(value.lower().split())
    for rx, family in _FAMILY_RULES:
        if rx.search(low):
            return _versioned(family, low)
    return UNKNOWN


_OPERATORS = frozenset({"and", "or", "with"})


def _spdx_like(value: str) -> bool:
    """Ids joined by AND/OR/WITH and parentheses (`MIT OR Apache-2.0`), not prose (`MIT License`)."""
    if not re.fullmatch(r"[\sA-Za-z0-9.+:()_-]+", value):
        return False
    tokens = value.replace("(", " ").replace(")", " ").split()
    return all((a.lower() in _OPERATORS) != (b.lower() in _OPERATORS) for a, b in zip(tokens, tokens[1:], strict=False))


def _choose(node, lic) -> tuple[bool, set[str]]:
    """(permissive possible, licenses of the chosen alternative) for a parsed expression."""
    from license_expression import LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        return _choose(node.license_symbol, lic)
    if isinstance(node, lic.AND):
        parts = [_choose(a, lic) for a in node.args]
        return all(p for p, _ in parts), set().union(*(s for _, s in parts))
    if isinstance(node, lic.OR):
        parts = [_choose(a, lic) for a in node.args]
        for ok, ids in parts:
            if ok:
                return True, ids
        return False, set().union(*(s for _, s in parts))
    key = node.key
    if key in lic.known_symbols or key.startswith("LicenseRef-"):
        known = key
    else:  # not an SPDX key: try the free-text families (`Apache 2.0`, `BSD`)
        known = guess_free_text(key)
    return is_permissive_id(known), {known}


def parse_declaration(value: str) -> set[str]:
    """A declared license (SPDX expression or free text) -> SPDX ids of the alternative a user may
    pick: the most permissive one of an `OR`. Empty for an absent declaration ('UNKNOWN', 'see LICENSE')."""
    v = " ".join(value.strip().strip("\"'").split())
    if not v or _ABSENT.match(v):
        return set()
    if _spdx_like(v):
        lic = _licensing()
        try:
            return _choose(lic.parse(v, validate=False, simple=False), lic)[1]
        except Exception:  # license_expression raises ExpressionError/ParseError subclasses
            pass
    # free text: "MIT or Apache 2.0", "BSD, see LICENSE", "Dual licensed: MIT/Apache-2.0"; an OR is
    # a choice only when one side is entirely permissive, else the whole text is read as one name
    # ("GNU Library or Lesser General Public License" is the LGPL)
    v = re.sub(r"\bor (?:any )?later(?: version)?", "or-later", v, flags=re.IGNORECASE)
    for alt in re.split(r"\s+or\s+|\s*/\s*|\s*\|\s*", v, flags=re.IGNORECASE):
        ids = {guess_free_text(p) for p in re.split(r"\s+and\s+|\s*[,;&]\s*", alt, flags=re.IGNORECASE)
               if p.strip() and not _ABSENT.match(p.strip())}
        if ids and all(is_permissive_id(i) for i in ids):
            return ids
    return {guess_free_text(v)}


# ---------------------------------------------------------------------------------------------
# package metadata

def _pkg_info(text: str, detector: TextDetector) -> set[str]:
    msg = HeaderParser().parsestr(text)
    if expr := msg.get("License-Expression"):
        return parse_declaration(expr)  # PEP 639: the expression supersedes classifiers and License
    out: set[str] = set()
    for cl in msg.get_all("Classifier") or []:
        parts = [p.strip() for p in cl.split("::")]
        if parts[0] != "License" or len(parts) < 2 or parts[-1] in ("OSI Approved", "DFSG approved"):
            continue
        out.add(guess_free_text(parts[-1]))
    value = (msg.get("License") or "").strip()
    if value and not _ABSENT.match(value):
        if len(value) <= 100 and "\n" not in value:
            out |= parse_declaration(value)
        else:  # a whole license text pasted into the field
            out |= detector(value) or {UNKNOWN}
    return out


def _metadata_licenses(name: str, text: str, detector: TextDetector = detect_text) -> set[str]:
    name = name.lower()
    if name in ("metadata", "pkg-info"):
        return _pkg_info(text, detector)
    if name == "package.json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return set()
        if not isinstance(data, dict):
            return set()
        lic = data.get("license")
        if isinstance(lic, dict):
            lic = lic.get("type")
        if lic is None and isinstance(data.get("licenses"), list):  # the deprecated array form
            lic = " OR ".join(x.get("type", "") for x in data["licenses"] if isinstance(x, dict))
        if not isinstance(lic, str):
            return set()
        if lic.strip().upper() == "UNLICENSED":  # npm: "not licensed for use by others"
            return {PROPRIETARY}
        return parse_declaration(lic)
    if name in ("cargo.toml", "pyproject.toml"):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return set()
        section = data.get("package" if name == "cargo.toml" else "project", {})
        lic = section.get("license") if isinstance(section, dict) else None
        if isinstance(lic, dict):
            lic = lic.get("text")  # {file = ...}: the license file itself is read
        if not isinstance(lic, str):
            return set()
        return parse_declaration(lic) if len(lic) <= 100 else (detector(lic) or {UNKNOWN})
    if name == "setup.cfg":
        m = re.search(r"^\s*license\s*=\s*(.+)$", text, flags=re.MULTILINE)
        return parse_declaration(m.group(1)) if m and len(m.group(1)) <= 100 else set()
    return set()


def spdx_headers(text: str, max_chars: int = 4000) -> set[str]:
    """Licenses of the `SPDX-License-Identifier:` lines at the head of a source file."""
    out: set[str] = set()
    for m in SPDX_HEADER.finditer(text[:max_chars]):
        out |= parse_declaration(m.group(1)) or {UNKNOWN}
    return out


def scope_dir(path: str) -> str:
    """The directory a license/metadata file speaks for ("" = repo root)."""
    parts = PurePosixPath(path).parts[:-1]
    for i, part in enumerate(parts):
        if part.endswith((".dist-info", ".egg-info")):
            return "/".join(parts[:i])
    return "/".join(parts)


def is_license_candidate(path: str) -> bool:
    name = PurePosixPath(path).name
    return is_license_file(name) or name.lower() in METADATA_FILES


class LicenseMap:
    """Licenses per directory of one repository; `lookup(path)` inherits from every parent dir.
    Declared (metadata) and detected (license texts) licenses of a directory are both kept."""

    def __init__(self, detector: str | TextDetector = "rules") -> None:
        self.detector: TextDetector = get_detector(detector) if isinstance(detector, str) else detector
        self.declared: dict[str, set[str]] = {}
        self.detected: dict[str, set[str]] = {}

    def add_file(self, path: str, text: str) -> None:
        name = PurePosixPath(path).name
        scope = scope_dir(path)
        if name.lower() in METADATA_FILES:
            if found := _metadata_licenses(name, text, self.detector):
                self.declared.setdefault(scope, set()).update(found)
        elif is_license_file(name):
            found = self.detector(text)
            if not found and not _NOTICE_NAMES.match(name) and len(text.split()) <= 6:
                found = parse_declaration(text)  # a LICENSE file holding just a name: "Apache 2.0"
            if not found and (_NOTICE_NAMES.match(name) or (len(text) < 1000 and _POINTER.search(text))):
                return  # attributions (NOTICE) or a pointer to other license files grant nothing by themselves
            self.detected.setdefault(scope, set()).update(found or {UNKNOWN})

    def scopes(self) -> dict[str, set[str]]:
        return {d: self.declared.get(d, set()) | self.detected.get(d, set())
                for d in set(self.declared) | set(self.detected)}

    def lookup_fn(self) -> Callable[[str], list[str]]:
        scopes = self.scopes()

        def lookup(path: str) -> list[str]:
            parts = PurePosixPath(path).parts[:-1]
            found: set[str] = set(scopes.get("", ()))
            for i in range(1, len(parts) + 1):
                found |= scopes.get("/".join(parts[:i]), set())
            return sorted(found)

        return lookup


def license_type(licenses: list[str] | set[str]) -> str:
    if not licenses:
        return "no_license"
    return "permissive" if all(is_permissive_id(lic) for lic in licenses) else "non_permissive"
