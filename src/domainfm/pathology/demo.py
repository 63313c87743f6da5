"""The pathology demo: each stage's `demo.run(ctx)` in pipeline order (see domainfm.core.demo)."""

from __future__ import annotations

from domainfm.core.demo import DemoContext, run_stages

STAGES = [
    "domainfm.pathology.slides.demo:run",  # tile the real slides -> ctx.state["tiles"]
    "domainfm.pathology.ssl.demo:run",  # MoCo v2 pretraining -> ctx.state["encoder"]
    "domainfm.pathology.features.demo:run",  # extract + probe + UMAP -> ctx.state["features"]
    "domainfm.pathology.mil.demo:run",  # PCam-bags, short CV with Chowder + ABMIL, heatmap
]


def run(ctx: DemoContext) -> None:
    run_stages("pathology", STAGES, ctx)
