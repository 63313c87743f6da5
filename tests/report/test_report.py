"""`domainfm report`: the page shows what the stage files say, in data-flow order; absent stages are left
out; a malformed file is one warning line; the page is self-contained (every image a data URI)."""

from __future__ import annotations

import base64
import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.report import build_report, write_run_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The parts of the page the tests read: section titles, table rows, image sources, warnings, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.h3: list[str] = []
        self.rows: list[list[str]] = []
        self.imgs: list[str] = []
        self.warnings: list[str] = []
        self.urls: list[str] = []
        self._stack: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._buf: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for k in ("src", "href"):
            if a.get(k) and not a[k].startswith(("#", "data:")):
                self.urls.append(a[k])
        if tag == "link":
            self.urls.append(a.get("href") or "link")
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag in ("h3", "div"):
            self._stack.append(a.get("class") or tag)
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag in ("h3", "div") and self._stack:
            kind = self._stack.pop()
            text = " ".join("".join(self._buf).split())
            if kind == "h3":
                self.h3.append(text)
            elif kind == "warning":
                self.warnings.append(text)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self._buf.append(data)


@pytest.fixture(scope="module")
def report(run_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Page, str]:
    out = tmp_path_factory.mktemp("html") / "report.html"
    res = build_report(run_folder, out)
    text = out.read_text()
    return res, Page(text), text


def test_sections_in_data_flow_order(report: tuple[dict, Page, str]) -> None:
    _, page, _ = report
    titles = [t.split(" ")[0] if not t.startswith(("Slides", "MoCo", "Feature")) else t for t in page.h3]
    order = ["Curation", "Pretraining", "Evaluation", "Attribution", "Slides and tiles pathology/tiles", "MoCo",
             "Feature", "MIL"]
    got = [next(i for i, t in enumerate(titles) if t.startswith(o.split(" ")[0])) for o in order]
    assert got == sorted(got), page.h3
    assert not page.warnings, page.warnings


def test_numbers_are_those_of_the_stage_files(run_folder: Path, report: tuple[dict, Page, str]) -> None:
    _, page, text = report
    stats = json.loads((run_folder / "code" / "corpus" / "stats.json").read_text())
    funnel = [[f["step"], f"{f['files']:,}"] for f in stats["funnel"]]
    assert [r[:2] for r in page.rows if r and r[0] in {f["step"] for f in stats["funnel"]}][:len(funnel)] == funnel
    for reason, n in stats["dropped"].items():  # drops by reason (binary, exact_duplicate here)
        assert [reason, f"{n:,}"] in page.rows
    assert stats["dropped"].get("binary") == 1 and stats["dropped"].get("exact_duplicate", 0) >= 3
    assert ["email", f"{stats['pii']['email']:,}"] in page.rows  # the PII table
    # the evaluation table: HumanEval's canonical solutions all pass, 3 problems, 3 samples
    ev = json.loads((run_folder / "code" / "evaluate" / "canonical" / "results.json").read_text())
    assert ev["humaneval"]["pass@1"] == 1.0
    assert any(r[:5] == ["code/evaluate/canonical", "humaneval", "3", "3", "pass@1 = 1.000"] for r in page.rows)
    # tiles per slide, from the tiling summary
    with open(run_folder / "pathology" / "tiles" / "summary.csv") as fh:
        s = next(csv.DictReader(fh))
    assert any(r[:3] == [s["slide_id"], "ok", f"{int(s['n_tiles']):,}"] for r in page.rows)
    # the MIL table: AUC with its bootstrap CI, as the MIL stage computed it
    mil = json.loads((run_folder / "pathology" / "mil" / "meanpool" / "results.json").read_text())
    m = mil["cv_pooled"]
    assert f"{m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]" in text
    # the probe table and the trace summary, as their stages wrote them
    pr = json.loads((run_folder / "pathology" / "features" / "probe" / "results.json").read_text())
    (name, r), = pr["encoders"].items()
    assert any(row[:3] == [name, f"{r['linear']['auc']:.3f}", f"{r['linear']['accuracy']:.3f}"] for row in page.rows)
    tr = json.loads((run_folder / "code" / "attribution" / "traces.json").read_text())
    copied = tr["samples"][0]
    assert copied["longest_span_chars"] == 600  # the control: an excerpt of a training file is found whole
    top = copied["top_hit"]
    assert ["copied", "600", "600", f"{top['repo_name']}/{top['path']}"] in page.rows
    hist = json.loads((run_folder / "pathology" / "moco" / "history.json").read_text())
    assert f"{hist['loss'][-1] if not isinstance(hist['loss'][-1], dict) else hist['loss'][-1]['loss']:.3f}" in text
    # the header: the command line and the stage timings from run.json
    assert any(r and r[0] == "domainfm demo --quick" for r in page.rows)
    assert ["pathology/slides", "2.5"] in page.rows and ["total", "4.0"] in page.rows


def test_page_is_self_contained(report: tuple[dict, Page, str]) -> None:
    res, page, _ = report
    assert not page.urls, page.urls  # nothing fetched: no CDN, no stylesheet link, no external image
    # the curation funnel (a new plot), the loss curve, thumbnail + overlay + grid, ROC
    assert len(page.imgs) == res["images"] >= 6
    for src in page.imgs:
        head, _, b64 = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(b64).startswith(PNG_MAGIC)


def test_absent_stages_are_left_out(run_folder: Path, tmp_path: Path) -> None:
    code_only = tmp_path / "code_only"
    (code_only / "code" / "corpus").mkdir(parents=True)
    (code_only / "code" / "corpus" / "stats.json").write_bytes((run_folder / "code" / "corpus" / "stats.json").read_bytes())
    res = build_report(code_only, tmp_path / "a.html")
    text = (tmp_path / "a.html").read_text()
    assert [s.split(" (")[0] for s in res["sections"]] == ["code/Curation"]
    assert "Pathology model" not in text and "Code model" in text
    assert "run.json: not found" in text  # the header says what is missing
    empty = tmp_path / "empty"
    empty.mkdir()
    build_report(empty, tmp_path / "b.html")
    assert "No stage output was found" in (tmp_path / "b.html").read_text()


def test_malformed_files_are_one_warning_each(run_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "bad"
    (run / "code" / "corpus").mkdir(parents=True)
    (run / "code" / "corpus" / "stats.json").write_text('{"funnel": [')  # truncated JSON
    (run / "code" / "train" / "pretrain").mkdir(parents=True)
    (run / "code" / "train" / "pretrain" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n')
    tiles = run / "pathology" / "tiles"
    (tiles / "thumbnails").mkdir(parents=True)
    png = (run_folder / "pathology" / "tiles" / "thumbnails" / "CMU-1-Small-Region.png").read_bytes()
    (tiles / "thumbnails" / "S1.png").write_bytes(png[: len(png) // 2])  # a truncated PNG
    (tiles / "summary.csv").write_text("slide_id,status,n_tiles,reason\nS1,ok,12,\n")
    (run / "pathology" / "moco").mkdir(parents=True)
    (run / "pathology" / "moco" / "history.json").write_text('{"loss": [3.0, 2.5], "knn": "oops"}')
    (run / "run.json").write_text("[1, 2]")
    res = build_report(run, tmp_path / "bad.html")
    page = Page((tmp_path / "bad.html").read_text())
    joined = "\n".join(page.warnings)
    assert "stats.json: not valid JSON" in joined
    assert "metrics.jsonl: line 2 is not valid JSON" in joined
    assert "S1.png: damaged PNG" in joined
    assert "run.json: not a JSON object" in joined
    assert res["warnings"] == len(page.warnings) >= 4
    assert all("\n" not in w and len(w) < 300 for w in page.warnings)
    assert ["S1", "ok", "12", "", "", "", ""] in page.rows  # what was readable is still shown
    assert page.imgs and not any("S1.png" in i for i in page.imgs)


def test_cli(run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_folder), "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"report: .*r\.html \(\d+ sections, \d+ images, 0 warnings\)", out), out
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("domainfm: error:") and "no such run folder" in err and "\n" not in err
    assert not (tmp_path / "x.html").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "report.html").mkdir()  # a folder where the page should go: not writable as a file, even as root
    assert main(["report", str(run_folder), "-o", str(ro / "report.html")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("domainfm: error:") and "cannot write the report" in err and "\n" not in err
    assert [p.name for p in ro.iterdir()] == ["report.html"]  # no temporary file left behind


def test_run_record_merges_invocations(tmp_path: Path) -> None:
    write_run_record(tmp_path, {"code/curate": 1.0}, argv=["domainfm", "demo", "code"], wall_s=1.0)
    write_run_record(tmp_path, {"pathology/slides": 2.0}, argv=["domainfm", "demo", "pathology"], wall_s=2.0)
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["timings"] == {"code/curate": 1.0, "pathology/slides": 2.0}
    assert [c["command"] for c in rec["commands"]] == ["domainfm demo code", "domainfm demo pathology"]
    assert rec["machine"]["cpus"] >= 1 and "python" in rec["machine"]


def test_demo_ends_with_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`domainfm demo` records run.json (its stage timings) and ends by writing OUT/report.html."""
    import sys
    import types

    from domainfm import cli

    stage = types.ModuleType("domainfm.stub.demo")
    stage.run = lambda ctx: ctx.timings.update({"stub/stage": 0.5})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "domainfm.stub.demo", stage)
    cli._run_demo(("stub",), tmp_path / "demo", 1, True)
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'demo' / 'report.html'}" in out
    rec = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert rec["timings"] == {"stub/stage": 0.5} and rec["commands"][0]["wall_s"] is not None
    assert ["stub/stage", "0.5"] in Page((tmp_path / "demo" / "report.html").read_text()).rows
