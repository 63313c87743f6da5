"""The pathology demo shows MoCo beside its random-init baseline, with the one-line caveat and the pointer."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from domainfm.core.demo import DemoContext
from domainfm.pathology.mil import demo as mil_demo
from domainfm.pathology.ssl.demo import CAVEAT


def _features(path: Path, shift: float, seed: int, encoder: str) -> str:
    """An ImageFolder-style feature file (what `extract --images` writes): 120 normal, 60 tumour tiles."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(180, 8)).astype(np.float32)
    x[120:, 0] += shift
    y = np.array([0] * 120 + [1] * 60)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x)
        f.create_dataset("labels", data=y)
        f.create_dataset("paths", data=np.array([f"{c}/p{i}.jpg" for i, c in enumerate(y)], dtype=object),
                         dtype=h5py.string_dtype())
        f.attrs["classes"] = ["0", "1"]
        f.attrs["encoder"] = encoder
    return str(path)


@pytest.fixture()
def one_thread():  # noqa: ANN201 - the MIL models are tiny: one thread is fastest (as in the MIL tests)
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_mil_demo_prints_moco_and_random_init_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          one_thread: None) -> None:
    by = {lab: {"pcam_train": _features(tmp_path / f"{lab}_tr.h5", s, i, lab), "pcam_valid": _features(
        tmp_path / f"{lab}_va.h5", s, i + 10, lab)} for i, (lab, s) in enumerate((("moco", 3.0), ("random-init", 1.0)))}
    ctx = DemoContext(out=tmp_path / "out", data_dir=tmp_path, quick=True)
    ctx.state.update(features=by["moco"], features_by_encoder=by, slides=[])
    mil_demo.run(ctx)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith("| moco") or "| random-init" in line]
    assert len(rows) == 4  # 2 encoders x (chowder, abmil): no number without its baseline
    assert {r.split("|")[2].strip() for r in rows} == {"chowder", "abmil"}
    assert "docs/mil.md" in out
    assert "cannot be expected to beat random init" in CAVEAT and "docs/mil.md" in CAVEAT
