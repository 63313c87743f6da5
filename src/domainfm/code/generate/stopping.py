"""The project's one stop-truncation function (generation, serving and evaluation all cut with it).

While generating, transformers' own `stop_strings` (`StopStringCriteria`) ends a row as soon as its
text ends with a stop string; this function then cuts the decoded text at the first one.
"""

from __future__ import annotations

from collections.abc import Iterable


def apply_stop(text: str, stop: Iterable[str]) -> str:
    """Cut `text` at the earliest occurrence of any stop string (not kept); empty stop strings are ignored."""
    cut = min((k for s in stop if s and (k := text.find(s)) >= 0), default=len(text))
    return text[:cut]
