"""`domainfm pathology tile`: batch, bad slides, missing resolution, summary, rerun skip; real slides."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import pytest
from slides_synth import make_base, write_pyramid

from domainfm.cli import main

SMALL = ["--tile-size", "32", "--min-tissue", "0.75", "--min-area", "100", "--max-hole", "100"]


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv") as fh:
        return {r["slide_id"]: r for r in csv.DictReader(fh)}


def test_batch_bad_slides_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "slides"
    src.mkdir()
    write_pyramid(src / "good.tiff", make_base(seed=1))
    write_pyramid(src / "nompp.tiff", make_base(seed=2), mpp=None)
    (src / "broken.svs").write_bytes(b"IJrE" + b"\x00" * 997)
    out = tmp_path / "out"
    rc = main(["pathology", "tile", str(src), "-o", str(out), *SMALL])
    assert rc == 1  # some slides failed, after all others were done
    s = _summary(out)
    assert list(s) == ["broken", "good", "nompp"]
    assert s["good"]["status"] == "ok" and int(s["good"]["n_tiles"]) == 9
    assert s["broken"]["status"] == "failed" and "cannot read broken.svs" in s["broken"]["reason"]
    assert s["nompp"]["status"] == "failed" and "--slide-mpp" in s["nompp"]["reason"]
    assert (out / "coords" / "good.h5").is_file() and not (out / "coords" / "nompp.h5").exists()
    printed = capsys.readouterr().out
    assert "1/3 slides ok" in printed and "broken" in printed
    # rerun with a CSV of resolutions: good is skipped, nompp now tiles; broken still fails
    csv_path = tmp_path / "mpp.csv"
    csv_path.write_text("slide_id,mpp\nnompp,0.25\n")
    mtime = (out / "coords" / "good.h5").stat().st_mtime_ns
    rc = main(["pathology", "tile", str(src), "-o", str(out), *SMALL, "--slide-mpp", str(csv_path)])
    assert rc == 1
    s = _summary(out)
    assert "earlier run" in s["good"]["reason"] and s["good"]["status"] == "ok"
    assert (out / "coords" / "good.h5").stat().st_mtime_ns == mtime
    assert s["nompp"]["status"] == "ok" and s["nompp"]["mpp_source"] == "--slide-mpp csv"
    # without the corrupt file every slide is ok -> exit 0; changed settings redo the slide
    (src / "broken.svs").unlink()
    rc = main(["pathology", "tile", str(src), "-o", str(out), *SMALL, "--slide-mpp", str(csv_path),
               "--min-tissue", "0.25"])
    assert rc == 0
    assert (out / "coords" / "good.h5").stat().st_mtime_ns != mtime
    assert int(_summary(out)["good"]["n_tiles"]) > 9


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["pathology", "tile", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no such slide" in capsys.readouterr().err
    rc = main(["pathology", "tile", str(tmp_path), "-o", str(tmp_path / "o"), "--slide-mpp", "abc"])
    assert rc == 2 and "neither a number" in capsys.readouterr().err


def test_workers_and_tiles(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    for i in range(2):
        write_pyramid(src / f"s{i}.tiff", make_base(seed=i))
    out = tmp_path / "out"
    rc = main(["pathology", "tile", str(src), "-o", str(out), *SMALL, "--workers", "2", "--save-tiles"])
    assert rc == 0
    for i in range(2):
        assert len(list((out / "tiles" / f"s{i}").glob("*.jpg"))) == 9
    assert not list((out / "tiles").glob(".*partial"))
    # OUT inside the input folder: our own PNG/JPEG outputs are not taken for slides on a rerun
    inner = src / "out"
    assert main(["pathology", "tile", str(src), "-o", str(inner), *SMALL, "--save-tiles"]) == 0
    assert main(["pathology", "tile", str(src), "-o", str(inner), *SMALL, "--save-tiles"]) == 0
    assert len(_summary(inner)) == 2


def test_real_slides_cli(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sdir = data_dir / "pathology" / "slides"
    src = tmp_path / "in"
    src.mkdir()
    for name in ("CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs"):
        (src / name).symlink_to(sdir / name)
    (src / "broken.svs").symlink_to(sdir / "corrupt" / "broken.svs")
    out = tmp_path / "out"
    rc = main(["pathology", "tile", str(src), "-o", str(out)])
    assert rc == 1
    s = _summary(out)
    assert s["CMU-1-Small-Region"]["status"] == "ok" and int(s["CMU-1-Small-Region"]["n_tiles"]) > 30
    assert s["TCGA-CR-7395-01A-01-TS1"]["status"] == "failed"
    assert "--slide-mpp" in s["TCGA-CR-7395-01A-01-TS1"]["reason"]
    assert s["broken"]["status"] == "failed"
    with h5py.File(out / "coords" / "CMU-1-Small-Region.h5") as f:
        assert f["coords"].attrs["patch_level"] == 0 and f["coords"].attrs["patch_size_level0"] == 224
        assert f.attrs["slide_mpp"] == pytest.approx(0.499, abs=1e-3)
    (src / "broken.svs").unlink()
    rc = main(["pathology", "tile", str(src), "-o", str(out), "--slide-mpp", "0.25"])
    assert rc == 0
    with h5py.File(out / "coords" / "TCGA-CR-7395-01A-01-TS1.h5") as f:
        d = f["coords"].attrs
        assert d["patch_level"] == 1 and d["patch_size_level0"] == 448 and len(f["coords"]) > 10
    shutil.rmtree(out)
