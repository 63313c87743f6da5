"""MBPP's reference solutions pass their tests in the sandbox (500 test problems, ids 11-510).

Known-broken reference solutions are listed with the reason; everything else must pass. By default a fixed
quarter of the problems runs (the suite must stay fast on 2 shared cores); `DOMAINFM_EVAL_FULL=1` runs all.
"""

from __future__ import annotations

import os
from pathlib import Path

from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.code.evaluate.tasks import get_task

KNOWN_BROKEN: dict[str, str] = {
    # not wrong, but too slow: an O(n^2) divisor scan over 1..9999 takes ~5-10 s of CPU on an idle core and
    # over a minute on a loaded machine, beyond the task's 10 s per-program timeout (bigcode's harness uses 3 s)
    "MBPP/123": "reference solution too slow for the timeout (amicable numbers up to 9999, O(n^2))",
}


def test_mbpp_reference_solutions_pass(data_dir: Path, sandbox: Sandbox) -> None:
    task = get_task("mbpp")
    problems = task.load(data_dir).problems
    assert [p.task_id for p in problems[:2]] == ["MBPP/11", "MBPP/12"] and problems[-1].task_id == "MBPP/510"
    # the reference is a whole program; the prompt (a docstring) is prepended as in the bigcode harness
    run = [p for p in problems if p.task_id not in KNOWN_BROKEN]
    assert len(run) == 500 - len(KNOWN_BROKEN)
    if not os.environ.get("DOMAINFM_EVAL_FULL"):  # every 4th problem by default; all 499 with the variable set
        run = run[::4]
    # sandbox start-up is mostly waiting (namespace set-up), so more workers than cores pays off
    results = sandbox.run_many([task.program(p, p.reference) for p in run], workers=6)
    failed = {p.task_id: r.result for p, r in zip(run, results, strict=True) if not r.passed}
    assert failed == {}
