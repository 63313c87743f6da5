"""The attribution demo stage: index + data card of the demo corpus, trace of the model's generations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.core.demo import DemoContext
from domainfm.core.errors import UserError


def test_demo_stage_traces_generations_and_finds_its_control(curated: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.code.attribution.demo import run

    with pytest.raises(UserError, match="curated corpus"):
        run(DemoContext(out=tmp_path / "none", quick=True))
    gens = tmp_path / "generations.jsonl"
    gens.write_text(json.dumps({"id": "completion", "completions": ["def read_config(path):\n    return 1\n"]}) + "\n")
    ctx = DemoContext(out=tmp_path / "demo", quick=True, state={"corpus": str(curated), "generations": str(gens)})
    run(ctx)
    out = capsys.readouterr().out
    assert "0 of 1 generations contain a span" in out
    assert "-> 100% of its n-grams found" in out
    assert (tmp_path / "demo" / "code" / "attribution" / "datacard" / "swhids.parquet").is_file()
    assert Path(ctx.state["trace_index"], "index.json").is_file()
    traces = json.loads((tmp_path / "demo" / "code" / "attribution" / "traces.json").read_text())
    assert traces["summary"] == {"samples": 1, "min_span_chars": 50, "with_training_span": 0, "untraceable": 0}
