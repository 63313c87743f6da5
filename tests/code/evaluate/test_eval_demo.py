"""The demo stage in its quick form: no model from training -> it says so; canonical solutions all pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.code.evaluate import demo
from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.core.demo import DemoContext


def test_demo_quick_without_model(sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = DemoContext(out=tmp_path, quick=True)
    demo.run(ctx)
    out = capsys.readouterr().out
    assert "skipping model evaluation" in out
    assert "canonical solutions: pass@1 = 1.000 on 16 problems" in out
    res = json.loads((tmp_path / "code" / "evaluate" / "canonical" / "results.json").read_text())
    assert res["humaneval"]["pass@1"] == 1.0
    assert ctx.state["eval_results"] == str(tmp_path / "code" / "evaluate")
