"""Demo stage: evaluate the demo's tiny model on a few HumanEval problems, then show the harness is sound by
executing HumanEval's canonical solutions in the sandbox (they must all pass)."""

from __future__ import annotations

import json
from pathlib import Path

from domainfm.core.demo import DemoContext


def run(ctx: DemoContext) -> None:
    from domainfm.code.evaluate.harness import EvalConfig, evaluate
    from domainfm.code.evaluate.sandbox import Sandbox
    from domainfm.code.evaluate.tasks import get_task
    from domainfm.core.errors import UserError

    out = Path(ctx.out) / "code" / "evaluate"
    try:
        Sandbox().check()
        unsafe = False
    except UserError as exc:
        print(f"  {exc}\n  -> the demo executes WITHOUT a sandbox (see the warning)")
        unsafe = True
    workers = 2 * max(1, ctx.workers)  # sandbox start-up is mostly kernel waiting: overlap it

    model = ctx.state.get("model")
    if model and Path(model).is_dir():
        n = 2 if ctx.quick else 6
        res = evaluate(EvalConfig(tasks=["humaneval"], model=str(model), output=str(out / "tiny-model"),
                                  limit=n, max_new_tokens=32 if ctx.quick else 64, batch_size=n,
                                  workers=workers, unsafe_local_execution=unsafe))
        print(f"  tiny model on {n} HumanEval problems: pass@1 = {res['humaneval']['pass@1']:.3f} "
              f"(near 0 is expected for a model this small); outputs in {out / 'tiny-model'}")
    else:
        print("  no model from the training stage (ctx.state['model'] is missing): skipping model evaluation")

    problems = get_task("humaneval").load().problems
    if ctx.quick:
        problems = problems[:16]
    samples = out / "canonical_samples.jsonl"
    samples.parent.mkdir(parents=True, exist_ok=True)
    samples.write_text("".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n"
                               for p in problems))
    res = evaluate(EvalConfig(tasks=["humaneval"], samples=str(samples), output=str(out / "canonical"),
                              workers=workers, unsafe_local_execution=unsafe))
    t = res["metadata"]["tasks"]["humaneval"]
    print(f"  canonical solutions: pass@1 = {res['humaneval']['pass@1']:.3f} on {t['n_problems']} problems "
          f"({t['timing']['samples_per_s']} samples/s, sandboxed={res['metadata']['sandbox']['isolated']})")
    ctx.state["eval_results"] = str(out)
