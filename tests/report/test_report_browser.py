"""The report in a real browser: headless Chromium (Debian's `chromium`, installed by scripts/bootstrap.sh)
opens the page, takes a screenshot, and the page's own self-check says every image decoded and no script
error happened (the page writes data-images / data-broken-images / data-errors on <body> at `load`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from domainfm.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/bootstrap.sh installs "
                                                          "Debian's chromium)")


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI runs as root, where Chromium's own sandbox refuses to start
    cmd = [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def _body(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))


def test_report_opens_in_chromium_and_every_image_decodes(run_folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    html = tmp_path / "report.html"
    res = build_report(run_folder, html)
    dom = _chromium(["--dump-dom", html.as_uri()], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = _body(dom.stdout)
    assert body.get("loaded") == "1", body  # the load event fired: the page finished loading
    assert body["errors"] == "0", body
    assert int(body["images"]) == res["images"] >= 6
    assert body["broken-images"] == "0", body
    shot = tmp_path / "report.png"
    out = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri()], tmp_path / "profile")
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        # not a blank page: the header bar and text make many colours
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 50


def test_the_self_check_sees_a_broken_image(tmp_path: Path) -> None:
    """The negative control: the same self-check on a page with an undecodable image reports it."""
    template = (Path(__file__).parents[2] / "src" / "domainfm" / "report" / "templates" / "report.html.j2").read_text()
    script = template[template.index("<script>"):template.index("</script>") + len("</script>")]
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img src='data:image/png;base64,iVBORw0KGgoAAAA'>"
                    "<img src='data:image/png;base64," + _tiny_png() + "'>" + script + "</body></html>")
    body = _body(_chromium(["--dump-dom", page.as_uri()], tmp_path / "profile").stdout)
    assert body == {"images": "2", "broken-images": "1", "errors": "0", "loaded": "1"}, body


def _tiny_png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
