"""`write_datacard(corpus, out)`: datacard.md + datacard.html + swhids.parquet for a curated corpus.

Everything comes from the files `code curate` wrote (stats.json, data/, removed/, pii.parquet,
dedup_clusters.parquet); nothing is re-computed from the sources. `swhids.parquet` lists the SWHID of
every training file with its repository and path, the way The Stack v2 publishes its IDs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError, require
from domainfm.core.io import atomic_write_text

Table = tuple[list[str], list[list[Any]]]


def _read(corpus: Path, name: str, columns: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = sorted((corpus / name).glob("*.parquet")) if (corpus / name).is_dir() else (
        [corpus / name] if (corpus / name).is_file() else [])
    tables = [pq.read_table(p, columns=columns) for p in paths if set(columns) <= set(pq.read_schema(p).names)]
    return pa.concat_tables(tables) if tables else None


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def collect(corpus: Path) -> dict[str, Table | dict[str, Any]]:
    """The tables of the card, from the curation outputs."""
    stats_path = corpus / "stats.json"
    if not stats_path.is_file():
        raise UserError(f"{corpus} is not a curated corpus (no stats.json; write one with `code curate`)")
    try:
        stats = json.loads(stats_path.read_text())
    except ValueError as exc:
        raise UserError(f"{stats_path} is unreadable: {exc}") from None
    data = _read(corpus, "data", ["swhid", "repo_name", "path", "language", "license_type", "licenses", "size"])
    rows = data.to_pylist() if data is not None else []
    by_lang: Counter = Counter()
    by_lang_bytes: Counter = Counter()
    by_lic: Counter = Counter()
    by_lic_bytes: Counter = Counter()
    for r in rows:
        by_lang[r["language"]] += 1
        by_lang_bytes[r["language"]] += r["size"] or 0
        lic = " AND ".join(r["licenses"] or []) or "(none found)"
        key = f"{lic} ({r['license_type']})"
        by_lic[key] += 1
        by_lic_bytes[key] += r["size"] or 0
    removed = _read(corpus, "removed", ["step", "reason", "detail"])
    decon: Counter = Counter()
    opt_out = 0
    if removed is not None:
        for r in removed.to_pylist():
            if r["reason"] == "benchmark_contamination":
                decon[(r["detail"] or "unknown").split(":", 1)[0]] += 1
            opt_out += r["reason"] == "opt_out"
    pii = _read(corpus, "pii.parquet", ["type"])
    pii_counts = Counter(pii.column("type").to_pylist()) if pii is not None else Counter(stats.get("pii") or {})
    clusters = _read(corpus, "dedup_clusters.parquet", ["kind", "kept_swhid"])
    dedup: Counter = Counter()
    if clusters is not None:
        for kind, _keeper in set(zip(clusters.column("kind").to_pylist(), clusters.column("kept_swhid").to_pylist(),
                                    strict=True)):
            dedup[kind] += 1
        removed_by_kind = Counter(clusters.column("kind").to_pylist())
    else:
        removed_by_kind = Counter()
    funnel = stats.get("funnel", [])
    by_step = stats.get("dropped_by_step", {})
    return {
        "summary": {"files_in": stats.get("files_in"), "files_out": stats.get("files_out"),
                    "bytes_in": stats.get("bytes_in"), "bytes_out": stats.get("bytes_out"),
                    "repositories": stats.get("repos"), "opt_outs_honoured": opt_out},
        "funnel": (["step", "files", "bytes", "dropped (reason: files)"],
                   [[f["step"], f["files"], f["bytes"],
                     ", ".join(f"{k}: {v}" for k, v in by_step.get(f["step"], {}).items()) or "-"] for f in funnel]),
        "languages": (["language", "files", "bytes"],
                      [[k, v, by_lang_bytes[k]] for k, v in by_lang.most_common()]),
        "licenses": (["licenses (type)", "files", "bytes"],
                     [[k, v, by_lic_bytes[k]] for k, v in by_lic.most_common()]),
        "pii": (["kind", "redactions"], [[k, v] for k, v in sorted(pii_counts.items())]),
        "decontamination": (["benchmark", "files removed"], [[k, v] for k, v in sorted(decon.items())]),
        "near_dup": (["kind", "clusters", "files removed"],
                     [[k, dedup[k], removed_by_kind[k]] for k in sorted(set(dedup) | set(removed_by_kind))]),
        "_swhids": data.select(["swhid", "repo_name", "path", "language", "license_type"]) if data is not None else None,
    }


TITLES = {"funnel": "Curation funnel", "languages": "Files and bytes per language",
          "licenses": "Files and bytes per license", "pii": "PII redactions by kind",
          "decontamination": "Decontamination: files removed per benchmark",
          "near_dup": "Duplicate clusters"}


def to_markdown(card: dict[str, Any], corpus: Path) -> str:
    s = card["summary"]
    out = [f"# Data card: `{corpus.name}`", "",
           f"{_fmt(s['files_out'])} training files ({_fmt(s['bytes_out'])} bytes) kept of {_fmt(s['files_in'])} "
           f"({_fmt(s['bytes_in'])} bytes) from {_fmt(s['repositories'])} repositories; opt-outs honoured: "
           f"{_fmt(s['opt_outs_honoured'])} files. Every training file is listed with its SWHID in `swhids.parquet`.",
           ""]
    for key, title in TITLES.items():
        head, rows = card[key]
        out += [f"## {title}", ""]
        if not rows:
            out += ["none", ""]
            continue
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data card: {{ name }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}</style></head><body>
<h1>Data card: <code>{{ name }}</code></h1>
<p>{{ "{:,}".format(s.files_out) }} training files ({{ "{:,}".format(s.bytes_out) }} bytes) kept of
{{ "{:,}".format(s.files_in) }} ({{ "{:,}".format(s.bytes_in) }} bytes) from {{ s.repositories }} repositories;
opt-outs honoured: {{ s.opt_outs_honoured }} files. Every training file is listed with its SWHID in
<code>swhids.parquet</code>.</p>
{% for key, title in titles.items() %}{% set head, rows = card[key] %}
<h2>{{ title }}</h2>
{% if rows %}<table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in r %}<td{% if c is number %} class="n"{% endif %}>{{ fmt(c) }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p>none</p>{% endif %}
{% endfor %}</body></html>
"""


def to_html(card: dict[str, Any], corpus: Path) -> str:
    jinja2 = require("jinja2", "code")
    env = jinja2.Environment(autoescape=True)
    return env.from_string(_HTML).render(name=corpus.name, s=card["summary"], card=card, titles=TITLES, fmt=_fmt)


def write_datacard(corpus: Path, out: Path) -> dict[str, Path]:
    import pyarrow.parquet as pq

    corpus, out = Path(corpus), Path(out)
    card = collect(corpus)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "datacard.md", "html": out / "datacard.html", "swhids": out / "swhids.parquet"}
    atomic_write_text(paths["md"], to_markdown(card, corpus))
    atomic_write_text(paths["html"], to_html(card, corpus))
    table = card["_swhids"]
    if table is None:
        import pyarrow as pa

        table = pa.table({c: pa.array([], pa.string()) for c in ("swhid", "repo_name", "path", "language",
                                                                   "license_type")})
    tmp = paths["swhids"].with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(paths["swhids"])
    return paths
