"""Scan a run folder, build its sections in data-flow order, render one self-contained HTML page."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError
from domainfm.core.io import atomic_write_text
from domainfm.report import code_sections, pathology_sections  # noqa: F401 - they register the sections
from domainfm.report.files import Malformed, RunFolder, load_json
from domainfm.report.runinfo import RUN_RECORD
from domainfm.report.sections import SECTIONS, Section

# the order the data flows through the stages (a section registered later and not listed goes last)
ORDER = ["code/curation", "code/tokenizer", "code/pretraining", "code/evaluation", "code/attribution",
         "pathology/slides", "pathology/moco", "pathology/probe", "pathology/mil", "pathology/heatmaps"]
DOMAINS = {"code": "Code model", "pathology": "Pathology model"}


def build_report(run_dir: str | Path, out_html: str | Path) -> dict[str, Any]:
    """Write the report of `run_dir` to `out_html`; returns {path, sections, warnings, images}."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    run = RunFolder.scan(run_dir)
    names = [n for n in ORDER if n in SECTIONS] + [n for n in SECTIONS.names() if n not in ORDER]
    sections: list[Section] = [s for n in names for s in SECTIONS.get(n)(run)]
    titles = [s.title for s in sections]
    for s in sections:
        s.items = _group_tables(s.items)
        s.label = s.title if titles.count(s.title) == 1 else f"{s.title} ({Path(s.source).name})"
    header = _header(run)
    by_domain = [(DOMAINS.get(d, d), [s for s in sections if s.domain == d])
                 for d in dict.fromkeys(s.domain for s in sections)]
    page = _render(title=f"domainfm report: {run_dir.resolve().name}", run_dir=str(run_dir.resolve()),
                   header=header, domains=by_domain, generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    out_html = Path(out_html)
    try:
        atomic_write_text(out_html, page)
    except OSError as exc:  # a read-only or missing place, a full disk: one line, nothing half-written
        raise UserError(f"{out_html}: cannot write the report ({exc.strerror or exc.__class__.__name__})") from None
    warnings = sum(it["kind"] == "warning" for s in sections for it in s.items) + len(header["warnings"])
    images = sum(len(it["images"]) for s in sections for it in s.items if it["kind"] == "images")
    return {"path": str(out_html), "sections": [f"{s.domain}/{s.title} ({s.source})" for s in sections],
            "warnings": warnings, "images": images}


def _group_tables(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive tables side by side (one flex row that wraps): the page stays short on a laptop."""
    out: list[dict[str, Any]] = []
    for it in items:
        if it["kind"] == "table":
            if out and out[-1]["kind"] == "tables":
                out[-1]["tables"].append(it)
            else:
                out.append({"kind": "tables", "tables": [it]})
        else:
            out.append(it)
    return out


def _header(run: RunFolder) -> dict[str, Any]:
    """Commit, command lines, machine and stage wall times from RUN_DIR/run.json (what the demo records)."""
    head: dict[str, Any] = {"warnings": [], "record": None}
    path = run.root / RUN_RECORD
    if not path.is_file():
        head["warnings"].append(f"{RUN_RECORD}: not found (commit, commands, machine and stage times are "
                                "recorded by `domainfm demo`)")
        return head
    try:
        rec = load_json(path)
        if not isinstance(rec, dict):
            raise Malformed(f"{RUN_RECORD}: not a JSON object")
    except Malformed as exc:
        head["warnings"].append(str(exc))
        return head
    timings = rec.get("timings") if isinstance(rec.get("timings"), dict) else {}
    total = sum(v for v in timings.values() if isinstance(v, int | float))
    head["record"] = {"commit": rec.get("commit") or "not recorded",
                      "commands": [c for c in rec.get("commands") or [] if isinstance(c, dict)],
                      "machine": rec.get("machine") if isinstance(rec.get("machine"), dict) else {},
                      "timings": list(timings.items()), "total": total}
    return head


def _render(**ctx: Any) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("domainfm.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["esc"] = html.escape
    return env.get_template("report.html.j2").render(**ctx)
