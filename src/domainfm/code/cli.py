"""`domainfm code ...`: each stage subpackage registers its own commands (lazy heavy imports)."""

from __future__ import annotations

import typer

from domainfm.core.stages import stage_app

# one entry per stage, in pipeline order; each module defines `register(app: typer.Typer) -> None`
STAGES = [
    "domainfm.code.curate.cli",
    "domainfm.code.tokenizer.cli",
    "domainfm.code.data.cli",
    "domainfm.code.model.cli",
    "domainfm.code.train.cli",
    "domainfm.code.train.stage_cli",
    "domainfm.code.generate.cli",
    "domainfm.code.evaluate.cli",
    "domainfm.code.serve.cli",
    "domainfm.code.attribution.cli",
]


def build_app() -> typer.Typer:
    return stage_app(STAGES)
