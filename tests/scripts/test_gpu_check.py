"""`make gpu-check ARGS=--smoke`: the prepared GPU run's whole path (prepare -> run) on the CPU at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = os.environ.get("DOMAINFM_DATA")


def test_pack_unpack_is_byte_identical(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from PIL import Image

    pcam = tmp_path / "pcam"
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for cls in ("0", "1"):
            (pcam / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(pcam / split / cls / f"p{i}.jpg")
    counts = gpu_check.pack_pcam(pcam, tmp_path / "s.npz", n_train=4, n_valid=2)
    assert counts == {"train": 4, "valid": 2}
    out = gpu_check.unpack_pcam(tmp_path / "s.npz", tmp_path / "un")
    got = sorted(out.rglob("*.jpg"))
    assert len(got) == 6
    for f in got:
        assert f.read_bytes() == (pcam / f.relative_to(out)).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(not DATA or not (Path(DATA) / "pathology" / "pcam").is_dir(),
                    reason="needs $DOMAINFM_DATA/pathology/pcam (the real PCam patches)")
def test_gpu_check_smoke_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "DOMAINFM_PROGRESS": "0"}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "all", "--smoke", "-o",
                        str(tmp_path / "gc")], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "gc" / "result" / "gpu_check.json").read_text())
    md = (tmp_path / "gc" / "result" / "gpu_check.md").read_text()
    assert res["env"]["smoke"] and res["env"]["device"] == "cpu"
    assert res["env"]["bundle"]["bytes"] <= 64 * 2**20
    for k in ("mfu", "moco_vs_lightly", "thesis", "tests"):
        assert res[k]["status"] == "ok", (k, res[k].get("error"))
    # toy sizes on a shared CPU: the MFU figures only have to exist (the GPU run is the real measurement)
    assert res["mfu"]["ours_eager_mfu"] > 0 and res["mfu"]["ours_compile_mfu"] > 0 and res["mfu"]["bare_mfu"] > 0
    assert res["moco_vs_lightly"]["img_s"]["ours"] > 0 and res["moco_vs_lightly"]["img_s"]["lightly"] > 0
    assert set(res["thesis"]["probe"]) == {"moco", "random-init"}
    assert {r["encoder"] for r in res["thesis"]["bags"]} == {"moco", "random-init"}
    assert res["tests"]["passed"]
    assert "MFU" in md and "PCam-bags" in md
