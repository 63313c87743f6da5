"""Run every canonical solution of an EvalPlus task through the harness (expected outputs + checking).

A soundness check, too slow for the test suite: it computes the expected outputs of every problem (one
sandboxed run of the canonical solution each), then checks the canonical solutions as candidates exactly as
an evaluation does (`harness.check_completions`). Prints the two phase times, problems whose reference run
failed, and canonical solutions that did not pass (both should be empty).

    .venv/bin/python benchmarks/check_eval_references.py humaneval-plus
    .venv/bin/python benchmarks/check_eval_references.py mbpp-plus --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", help="humaneval-plus, humaneval-plus-mini or mbpp-plus")
    ap.add_argument("--limit", type=int, default=None, help="first N problems")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")

    from domainfm.code.evaluate.harness import check_completions
    from domainfm.code.evaluate.sandbox import Sandbox
    from domainfm.code.evaluate.tasks import get_task

    task = get_task(args.task)
    problems = task.load().problems[: args.limit]
    sandbox = Sandbox()
    print(f"{args.task}: {len(problems)} problems, workers={args.workers}, load average {os.getloadavg()}")
    t0 = time.perf_counter()
    task.prepare(problems, sandbox, args.workers)
    print(f"expected outputs: {time.perf_counter() - t0:.1f} s")
    failed_refs = {k: v for k, v in task._expected().items() if isinstance(v, str)}
    t0 = time.perf_counter()
    results = check_completions(task, [(p, p.reference) for p in problems], sandbox, args.workers)
    print(f"checking: {time.perf_counter() - t0:.1f} s")
    sandbox.close()
    bad = [(p.task_id, r.result) for p, r in zip(problems, results, strict=True) if not r.passed]
    print(f"reference runs failed: {failed_refs or 'none'}")
    print(f"canonical solutions passing: {len(problems) - len(bad)}/{len(problems)}; failing: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
