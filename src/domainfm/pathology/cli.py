"""`domainfm pathology ...`: each stage subpackage registers its own commands (lazy heavy imports)."""

from __future__ import annotations

import typer

from domainfm.core.stages import stage_app

STAGES = [
    "domainfm.pathology.slides.cli",
    "domainfm.pathology.ssl.cli",
    "domainfm.pathology.features.cli",
    "domainfm.pathology.mil.cli",
]


def build_app() -> typer.Typer:
    return stage_app(STAGES)
