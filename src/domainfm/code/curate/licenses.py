"""License detection: SPDX ids from LICENSE/COPYING texts and package metadata, inherited downwards.

Like The Stack v2, a license found in directory D applies to every file below D. Package metadata
(`*.dist-info/METADATA`, `PKG-INFO`, `package.json`, `Cargo.toml`, `setup.cfg`, `pyproject.toml`)
declares the license of the project the metadata describes: files in a `*.dist-info`/`*.egg-info`
folder describe its parent folder. A declared SPDX expression wins over texts found at the same level.
`license_type` is `permissive` (every detected license allows it), `no_license` or `non_permissive`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import PurePosixPath

PERMISSIVE = frozenset({
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "0BSD", "ISC",
    "Unlicense", "CC0-1.0", "Zlib", "PSF-2.0", "Python-2.0", "BSL-1.0", "HPND", "X11", "WTFPL", "NCSA",
    "PostgreSQL", "UPL-1.0", "CC-BY-4.0", "CC-BY-3.0", "MIT-CMU", "Apache-1.1", "BSD-4-Clause", "AFL-3.0",
    "Artistic-2.0", "ZPL-2.1", "OpenSSL", "Libpng", "libpng-2.0", "Unicode-3.0", "Unicode-DFS-2016",
    "BlueOak-1.0.0", "PIL",
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
    ("EPL-2.0", ("eclipse public license - v 2.0",)),
    ("EPL-1.0", ("eclipse public license - v 1.0",)),
    ("Apache-2.0", ("apache license", "version 2.0, january 2004")),
    ("Apache-2.0", ("licensed under the apache license, version 2.0",)),
    ("PSF-2.0", ("python software foundation license version 2",)),
    ("BSL-1.0", ("boost software license - version 1.0",)),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("CC0-1.0", ("cc0 1.0 universal",)),
    ("CC-BY-SA-4.0", ("attribution-sharealike 4.0 international",)),
    ("WTFPL", ("do what the fuck you want to public license",)),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software for any purpose",)),
    ("MIT", ("permission is hereby granted, free of charge, to any person obtaining a copy",)),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "names of its contributors")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("Zlib", ("altered source versions must be plainly marked",)),
    ("HPND", ("permission to use, copy, modify, and distribute this software and its documentation for any "
              "purpose and without fee is hereby granted",)),
]
_FAMILIES = {"BSD-3-Clause": "BSD-2-Clause", "LGPL-2.1": "GPL-2.0", "LGPL-3.0": "GPL-3.0"}

# PyPI trove classifiers and free-text `License:` values -> SPDX
_ALIASES = {
    "mit": "MIT", "mit license": "MIT", "the mit license": "MIT", "expat": "MIT",
    "apache": "Apache-2.0", "apache 2.0": "Apache-2.0", "apache-2.0": "Apache-2.0", "apache 2": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0", "apache license version 2.0": "Apache-2.0",
    "bsd": "BSD-3-Clause", "bsd license": "BSD-3-Clause", "new bsd": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause",
    "bsd-3-clause": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause", "modified bsd": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause", "simplified bsd": "BSD-2-Clause", "isc": "ISC", "isc license (iscl)": "ISC",
    "isc license": "ISC", "psf": "PSF-2.0", "psfl": "PSF-2.0", "python software foundation license": "PSF-2.0",
    "psf license": "PSF-2.0", "public domain": "Unlicense", "the unlicense (unlicense)": "Unlicense",
    "cc0 1.0 universal (cc0 1.0) public domain dedication": "CC0-1.0", "zlib": "Zlib",
    "zlib/libpng license": "Zlib", "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "mpl-2.0": "MPL-2.0",
    "gnu general public license v2 (gplv2)": "GPL-2.0", "gnu general public license v3 (gplv3)": "GPL-3.0",
    "gnu general public license (gpl)": "GPL-2.0", "gpl": "GPL-2.0", "gplv2": "GPL-2.0", "gplv3": "GPL-3.0",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.1",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0", "lgpl": "LGPL-2.1",
    "gnu library or lesser general public license (lgpl)": "LGPL-2.1",
    "gnu affero general public license v3": "AGPL-3.0", "eclipse public license 2.0 (epl-2.0)": "EPL-2.0",
    "historical permission notice and disclaimer (hpnd)": "HPND", "boost software license 1.0 (bsl-1.0)": "BSL-1.0",
    "the unlicense": "Unlicense", "universal permissive license (upl)": "UPL-1.0",
}
_SPDX_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
LICENSE_FILE = re.compile(r"^(licen[cs]e|copying|unlicense|copyright)([._-].*)?$", re.IGNORECASE)
METADATA_FILES = {"metadata", "pkg-info", "package.json", "cargo.toml", "setup.cfg", "pyproject.toml"}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


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


def _alias(value: str) -> str | None:
    v = value.strip().strip("\"'")
    if not v or v.upper() in ("UNKNOWN", "NONE"):
        return None
    low = v.lower()
    if low in _ALIASES:
        return _ALIASES[low]
    if _SPDX_TOKEN.match(v) and len(v) <= 40:
        return v
    return None


def parse_expression(expr: str) -> list[set[str]]:
    """An SPDX expression as alternatives (OR) of conjunctions (AND); unknown names kept verbatim."""
    expr = expr.replace("(", " ").replace(")", " ")
    alts = []
    for alt in re.split(r"\s+OR\s+|\s*/\s*", expr, flags=re.IGNORECASE):
        ids = set()
        for part in re.split(r"\s+AND\s+|\s+WITH\s+[\w.-]+", alt, flags=re.IGNORECASE):
            part = part.strip()
            if part:
                ids.add(_alias(part) or "LicenseRef-unknown")
        if ids:
            alts.append(ids)
    return alts


def _from_expression(expr: str) -> set[str]:
    """Choose the most permissive alternative of an OR expression (a user may pick any of them)."""
    alts = parse_expression(expr)
    if not alts:
        return set()
    for alt in alts:
        if alt <= PERMISSIVE:
            return alt
    return alts[0]


def _metadata_licenses(name: str, text: str) -> set[str]:
    name = name.lower()
    if name in ("metadata", "pkg-info"):
        head = text.split("\n\n", 1)[0]  # RFC 822 headers; the body is the long description
        for line in head.splitlines():
            if line.lower().startswith("license-expression:"):
                return _from_expression(line.split(":", 1)[1])
        out: set[str] = set()
        for line in head.splitlines():
            if line.startswith("Classifier: License ::"):
                leaf = line.rsplit("::", 1)[1].strip()
                if (spdx := _alias(leaf)) and leaf.lower() not in ("osi approved",):
                    out.add(spdx)
        if out:
            return out
        for line in head.splitlines():
            if line.lower().startswith("license:"):
                value = line.split(":", 1)[1].strip()
                if value and len(value) < 80:
                    return _from_expression(value) if _alias(value) or " or " in value.lower() else set()
        return set()
    if name == "package.json":
        try:
            lic = json.loads(text).get("license")
        except (json.JSONDecodeError, AttributeError):
            return set()
        return _from_expression(lic) if isinstance(lic, str) else set()
    if name in ("cargo.toml", "pyproject.toml"):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return set()
        section = data.get("package" if name == "cargo.toml" else "project", {})
        lic = section.get("license") if isinstance(section, dict) else None
        if isinstance(lic, dict):
            lic = lic.get("text")
        return _from_expression(lic) if isinstance(lic, str) and len(lic) < 80 else set()
    if name == "setup.cfg":
        m = re.search(r"^\s*license\s*=\s*(.+)$", text, flags=re.MULTILINE)
        return _from_expression(m.group(1)) if m and len(m.group(1)) < 80 else set()
    return set()


def scope_dir(path: str) -> str:
    """The directory a license/metadata file speaks for ("" = repo root)."""
    parts = PurePosixPath(path).parts[:-1]
    for i, part in enumerate(parts):
        if part.endswith((".dist-info", ".egg-info")):
            return "/".join(parts[:i])
    return "/".join(parts)


def is_license_candidate(path: str) -> bool:
    name = PurePosixPath(path).name
    return bool(LICENSE_FILE.match(name)) or name.lower() in METADATA_FILES


class LicenseMap:
    """Licenses per directory of one repository; `lookup(path)` inherits from every parent dir."""

    def __init__(self) -> None:
        self.declared: dict[str, set[str]] = {}
        self.detected: dict[str, set[str]] = {}

    def add_file(self, path: str, text: str) -> None:
        name = PurePosixPath(path).name
        scope = scope_dir(path)
        if name.lower() in METADATA_FILES:
            if found := _metadata_licenses(name, text):
                self.declared.setdefault(scope, set()).update(found)
        elif LICENSE_FILE.match(name):
            found = detect_text(text) or {"LicenseRef-unknown"}
            self.detected.setdefault(scope, set()).update(found)

    def scopes(self) -> dict[str, set[str]]:
        return {d: self.declared.get(d) or self.detected[d] for d in set(self.declared) | set(self.detected)}

    def lookup_fn(self) -> Callable[[str], list[str]]:
        scopes = self.scopes()

        def lookup(path: str) -> list[str]:
            parts = PurePosixPath(path).parts[:-1]
            found: set[str] = set(scopes.get("", ()))
            for i in range(1, len(parts) + 1):
                found |= scopes.get("/".join(parts[:i]), set())
            return sorted(found)

        return lookup


def license_type(licenses: list[str]) -> str:
    if not licenses:
        return "no_license"
    return "permissive" if all(lic in PERMISSIVE for lic in licenses) else "non_permissive"
