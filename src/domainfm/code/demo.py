"""The code-model demo: each stage's `demo.run(ctx)` in pipeline order (see domainfm.core.demo)."""

from __future__ import annotations

from domainfm.core.demo import DemoContext, run_stages

STAGES = [
    "domainfm.code.curate.demo:run",  # curated corpus of the stdlib + site-packages -> ctx.state["corpus"]
    "domainfm.code.train.demo:run",  # tokenizer, pack, tiny pretrain, completion + infill -> ctx.state["model"]
    "domainfm.code.evaluate.demo:run",  # HumanEval subset on the tiny model + canonical solutions
    "domainfm.code.attribution.demo:run",  # index + data card of the corpus; trace the model's generations
]


def run(ctx: DemoContext) -> None:
    run_stages("code", STAGES, ctx)
