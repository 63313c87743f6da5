"""The slides demo stage on the real sample slide (quick walk)."""

from __future__ import annotations

from pathlib import Path

import h5py

from domainfm.core.demo import DemoContext
from domainfm.pathology.slides import demo


def test_demo_quick(data_dir: Path, tmp_path: Path, capsys) -> None:
    ctx = DemoContext(out=tmp_path, data_dir=data_dir, workers=1, quick=True)
    demo.run(ctx)
    out = ctx.state["tiles"]
    assert out == tmp_path / "pathology" / "tiles"
    assert [p.name for p in ctx.state["slides"]] == ["CMU-1-Small-Region.svs"]
    with h5py.File(out / "coords" / "CMU-1-Small-Region.h5") as f:
        n = len(f["coords"])
    assert n > 30 and len(list((out / "tiles" / "CMU-1-Small-Region").glob("*.jpg"))) == n
    assert "1/1 slides ok" in capsys.readouterr().out
