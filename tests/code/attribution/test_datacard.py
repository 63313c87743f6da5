"""`code datacard`: the card's numbers are the curation outputs' numbers, and the SWHID list is complete."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq

from .conftest import corpus_texts


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tables += tag == "table"

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.cells.append(data.strip())


def test_datacard_matches_the_curation_outputs(curated: Path, tmp_path: Path) -> None:
    from domainfm.cli import main

    assert main(["code", "datacard", str(curated), "-o", str(tmp_path / "card")]) == 0
    stats = json.loads((curated / "stats.json").read_text())
    rows = corpus_texts(curated)
    swhids = pq.read_table(tmp_path / "card" / "swhids.parquet")
    assert swhids.column_names[:3] == ["swhid", "repo_name", "path"]
    assert sorted(zip(swhids.column("swhid").to_pylist(), swhids.column("path").to_pylist(), strict=True)) == \
        sorted((r["swhid"], r["path"]) for r in rows)
    assert all(s.startswith("swh:1:cnt:") and len(s) == 50 for s in swhids.column("swhid").to_pylist())
    md = (tmp_path / "card" / "datacard.md").read_text()
    assert f"{stats['files_out']:,} training files" in md and f"kept of {stats['files_in']:,}" in md
    for step in stats["funnel"]:  # every funnel row with its file count
        assert f"| {step['step']} | {step['files']:,} |" in md
    for reason, n in stats["dropped"].items():
        assert f"{reason}: {n}" in md
    n_python = sum(r["language"] == "Python" for r in rows)
    assert f"| Python | {n_python:,} |" in md
    parser = _Tables()
    parser.feed((tmp_path / "card" / "datacard.html").read_text())
    assert parser.tables == md.count("\n|---") and "Curation funnel" in parser.cells
