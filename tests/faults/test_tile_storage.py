"""`pathology tile` on a full disk or under a file-size limit: the batch stops with one line on stderr (exit 2,
no traceback), not a per-slide `failed` row and exit 1 -- a full disk is no bad slide, and every later slide
would fail alike. Slides finished before keep their markers, the slide being written gets none, and a rerun
with space resumes to the uninterrupted output.

EFBIG comes from RLIMIT_FSIZE (as in test_full_disk.py, SIGXFSZ ignored); ENOSPC is raised in process at a
chosen write, so that the batch fails on its *second* slide and the first one's outputs can be checked.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import stage_inputs as si
from test_full_disk import _assert_one_line_error, _fsize_limit, _run
from test_kill9 import TILE, _tile_snapshot

from domainfm.pathology.slides import batch, tiling
from domainfm.pathology.slides.tiling import TileConfig


def _cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return ["pathology", "tile", str(src), "-o", str(out), *TILE, *extra]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_file_size_limit_stops_the_batch_then_rerun(workers: str, tmp_path: Path) -> None:
    src = si.slides(tmp_path / "in")
    ref = tmp_path / "ref"
    assert _run(_cmd(src, ref)).returncode == 0
    out = tmp_path / "out"
    # 4 KB: the thumbnails and 32-px tiles fit, each slide's coords .h5 does not (EFBIG)
    proc = _run(_cmd(src, out, "--workers", workers), _fsize_limit(4096))
    _assert_one_line_error(proc, "too large")
    assert "failed" not in proc.stdout  # no per-slide failure table: the run stopped
    assert not list((out / "status").glob("*.json")) if (out / "status").exists() else True
    assert not list((out / "coords").glob("*.h5")) if (out / "coords").exists() else True
    if workers == "1":  # one slide at a time: the batch stopped at the first, the others were never started
        assert sorted(p.name for p in (out / "thumbnails").iterdir()) == ["slide0.png"]
    rerun = _run(_cmd(src, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _tile_snapshot(out) == _tile_snapshot(ref)


def test_full_disk_on_the_second_slide_keeps_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = si.slides(tmp_path / "in")
    out = tmp_path / "out"
    cfg = TileConfig(tile_size=32, min_tissue=0.75, min_area_um2=100, max_hole_area_um2=100)
    real = tiling.atomic_write_bytes

    def full_at_slide1(path, data):  # noqa: ANN001, ANN202
        if Path(path).name == "slide1.h5":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(tiling, "atomic_write_bytes", full_at_slide1)
    with pytest.raises(OSError) as info:
        batch.tile_slides([src], out, cfg)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (out / "status").iterdir()) == ["slide0.json"]  # finished: kept, marked
    assert sorted(p.name for p in (out / "coords").iterdir()) == ["slide0.h5"]
    assert not (out / "thumbnails" / "slide2.png").exists()  # never started
    assert not (out / "summary.csv").exists()  # no summary claims slide1 or slide2 as failed inputs
    monkeypatch.setattr(tiling, "atomic_write_bytes", real)
    rows = batch.tile_slides([src], out, cfg)  # space again: the rerun resumes
    assert [(r["slide_id"], r["status"]) for r in rows] == [("slide0", "ok"), ("slide1", "ok"), ("slide2", "ok")]
    assert rows[0]["reason"] == "done in an earlier run (skipped)" and rows[1]["reason"] == ""
    assert sorted(p.name for p in (out / "status").iterdir()) == ["slide0.json", "slide1.json", "slide2.json"]


@pytest.mark.parametrize(("exc", "stops"), [
    (OSError(errno.EFBIG, "File too large"), True),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')"), True),
    (OSError(errno.EACCES, "Permission denied", "/slides/a.svs"), False),  # an unreadable slide: that slide
    (OSError(errno.EACCES, "Permission denied", "OUT/coords/a.h5"), True),  # our own output folder
    (OSError(errno.EIO, "Input/output error", "/slides/a.svs"), False),
    (ValueError("corrupt tile"), False),
])
def test_which_errors_stop_the_batch(exc: BaseException, stops: bool, tmp_path: Path) -> None:
    if isinstance(exc, OSError) and exc.filename and str(exc.filename).startswith("OUT/"):
        exc.filename = str(tmp_path / str(exc.filename))
    assert batch.stops_batch(exc, tmp_path / "OUT") is stops
