"""What a page is made of, and the registry of section builders (the timm way).

A builder takes the scanned `RunFolder` and returns the sections it found (none when its stage did
not run). Content items are plain dicts the template renders by `kind`:
  {"kind": "kv", "pairs": [(key, value), ...]}         a few headline numbers
  {"kind": "table", "caption", "columns", "rows"}       rows are lists of cells (already formatted)
  {"kind": "images", "images": [{"src", "caption"}]}   a grid of embedded PNGs (data URIs)
  {"kind": "text", "text"} / {"kind": "warning", "text"}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainfm.core.registry import Registry
from domainfm.report.files import Malformed, RunFolder, png_uri

SectionBuilder = Callable[[RunFolder], list["Section"]]
SECTIONS: Registry[SectionBuilder] = Registry("report section")


@dataclass
class Section:
    domain: str  # "code" | "pathology"
    title: str
    source: str  # the folder it was read from, relative to the run folder
    items: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""  # the navigation link's text (the title, plus its folder when two sections share a title)

    @property
    def anchor(self) -> str:
        return (self.domain + "-" + self.title + "-" + self.source).lower().replace("/", "-").replace(" ", "-")

    # item helpers: each appends and returns self, so a builder reads top to bottom
    def kv(self, pairs: list[tuple[str, Any]]) -> Section:
        self.items.append({"kind": "kv", "pairs": [(k, v) for k, v in pairs if v is not None]})
        return self

    def table(self, columns: list[str], rows: list[list[Any]], caption: str = "") -> Section:
        if rows:
            self.items.append({"kind": "table", "columns": columns, "rows": rows, "caption": caption})
        return self

    def images(self, images: list[tuple[Path | bytes, str]]) -> Section:
        """Embed each (png path or PNG bytes, caption); an unreadable one becomes a warning line."""
        ok = []
        for img, caption in images:
            try:
                src = png_uri(img) if isinstance(img, Path) else _bytes_uri(img)
            except Malformed as exc:
                self.warn(str(exc))
                continue
            ok.append({"src": src, "caption": caption})
        if ok:
            self.items.append({"kind": "images", "images": ok})
        return self

    def text(self, text: str) -> Section:
        self.items.append({"kind": "text", "text": text})
        return self

    def warn(self, text: str) -> Section:
        self.items.append({"kind": "warning", "text": text})
        return self


def _bytes_uri(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def guarded(domain: str, title: str, source: str, fill: Callable[[Section], Any]) -> Section:
    """Run `fill` on a new section; a malformed file (or any error reading it) is one warning line."""
    sec = Section(domain, title, source)
    try:
        fill(sec)
    except Malformed as exc:
        sec.warn(str(exc))
    except Exception as exc:  # a report never crashes on one stage's files: say what failed, go on
        sec.warn(f"could not read {source}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return sec


def common_parent(files: list[Path]) -> str:
    """The deepest folder holding all these files (relative paths), for a section that gathers several runs."""
    parents = [f.parent.parts for f in files]
    out: list[str] = []
    for xs in zip(*parents, strict=False):
        if len(set(xs)) != 1:
            break
        out.append(xs[0])
    return "/".join(out) or "."


def fmt_int(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return "" if v is None else str(v)


def fmt_bytes(v: Any) -> str:
    try:
        b = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(b) < 1000 or unit == "TB":
            return f"{b:,.0f} {unit}" if unit == "B" else f"{b:,.1f} {unit}"
        b /= 1000
    return str(v)


def fmt_float(v: Any, digits: int = 3) -> str:
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return "n/a" if v is None else str(v)
