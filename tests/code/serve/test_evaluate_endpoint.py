"""`domainfm code evaluate --endpoint URL` against our server gives the same HumanEval completions, hence the
same pass@1, as evaluating the model folder directly (greedy; a few problems, the real HumanEval data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.slow
def test_evaluate_through_server_equals_local(serve_model: Path, live_server: Any, tmp_path: Path,
                                              data_dir: Path) -> None:
    from domainfm.code.evaluate.harness import EvalConfig, evaluate

    # the test model with a 2,048-token context (RoPE has no learned positions): HumanEval prompts fit
    model = tmp_path / "tiny2k"
    model.mkdir()
    for f in serve_model.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 2048}))
    common = {"tasks": ["humaneval"], "limit": 4, "max_new_tokens": 24, "data_dir": str(data_dir), "workers": 2}
    local = evaluate(EvalConfig(model=str(model), output=str(tmp_path / "local"), **common))
    with live_server(model) as srv:
        served = evaluate(EvalConfig(endpoint=srv.url, endpoint_model="tiny2k", output=str(tmp_path / "srv"),
                                     **common))

    def completions(d: str) -> list[str]:
        rows = [json.loads(x) for x in (tmp_path / d / "samples_results.jsonl").read_text().splitlines()]
        return [r["completion"] for r in sorted(rows, key=lambda r: r["task_id"])]

    assert completions("srv") == completions("local") and len(completions("local")) == 4
    assert any(completions("local"))
    assert served["humaneval"]["pass@1"] == local["humaneval"]["pass@1"]
