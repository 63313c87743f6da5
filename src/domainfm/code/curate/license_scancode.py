"""ScanCode (`scancode-toolkit`, extra `domainfm[licenses]`) as a license-text detector.

The same interface as the phrase rules (`text -> set of SPDX ids`), selected with
`--license-detector scancode`. ScanCode matches a text against ~40k license rules; each match
carries a rule whose license expression we convert to SPDX and parse with `license-expression`.
Matches scoring below `min_score` (ScanCode's 0-100 match score: coverage x relevance) are ignored,
like ScanCode's own "clue" level detections. Its index is built on first use (minutes) and cached
by ScanCode itself.
"""

from __future__ import annotations

from domainfm.code.curate.licenses import DETECTORS, TextDetector
from domainfm.core.errors import UserError

# matches that are clues, not licenses: "see LICENSE" references and bare warranty disclaimers
CLUE_KEYS = frozenset({"unknown-license-reference", "warranty-disclaimer"})


def scancode_detector(min_score: float = 80.0) -> TextDetector:
    """ScanCode keys -> SPDX ids; a key without an SPDX id keeps ScanCode's own LicenseRef, prefixed
    `LicenseRef-permissive-` when ScanCode categorises it Permissive or Public Domain (which
    `licenses.is_permissive_id` accepts), so ScanCode's finer catalogue does not turn permissive
    one-off licenses (protobuf's, matplotlib's) into unknowns."""
    try:
        from licensedcode.cache import get_index, get_licenses_db, get_licensing
    except ImportError as e:
        raise UserError("--license-detector scancode needs scancode-toolkit: "
                        "pip install 'domainfm[licenses]'") from e

    index, db, licensing = get_index(), get_licenses_db(), get_licensing()

    def spdx(key: str) -> str:
        lic = db.get(key)
        if lic is None:
            return f"LicenseRef-scancode-{key}"
        sid = lic.spdx_license_key or f"LicenseRef-scancode-{key}"
        if sid.startswith("LicenseRef-") and lic.category in ("Permissive", "Public Domain"):
            return f"LicenseRef-permissive-scancode-{key}"
        return sid

    def detect(text: str) -> set[str]:
        out: set[str] = set()
        for m in index.match(query_string=text):
            if m.score() < min_score:
                continue
            try:
                symbols = licensing.license_symbols(licensing.parse(m.rule.license_expression), decompose=True)
            except Exception:  # an expression ScanCode's own licensing cannot parse: keep it verbatim
                out.add(f"LicenseRef-scancode-{m.rule.license_expression}")
                continue
            out |= {spdx(sym.key) for sym in symbols
                    if not getattr(sym, "is_exception", False) and sym.key not in CLUE_KEYS}
        return out

    return detect


DETECTORS.register("scancode", scancode_detector, help="ScanCode license matching (extra domainfm[licenses])")
