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


def scancode_detector(min_score: float = 80.0) -> TextDetector:
    try:
        from licensedcode.cache import get_index
    except ImportError as e:
        raise UserError("--license-detector scancode needs scancode-toolkit: "
                        "pip install 'domainfm[licenses]'") from e
    from license_expression import get_spdx_licensing

    index = get_index()
    licensing = get_spdx_licensing()

    def detect(text: str) -> set[str]:
        out: set[str] = set()
        for m in index.match(query_string=text):
            if m.score() < min_score:
                continue
            expr = m.rule.spdx_license_expression()
            try:
                out |= {s.key for s in licensing.license_symbols(licensing.parse(expr, validate=False))
                        if not getattr(s, "is_exception", False)}
            except Exception:  # an expression license-expression cannot parse: keep it verbatim
                out.add(expr)
        return out

    return detect


DETECTORS.register("scancode", scancode_detector, help="ScanCode license matching (extra domainfm[licenses])")
