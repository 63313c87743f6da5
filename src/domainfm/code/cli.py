"""`domainfm code ...`: each stage subpackage registers its own commands (lazy heavy imports)."""

from __future__ import annotations

import importlib

import typer

# one entry per stage, in pipeline order; each module defines `register(app: typer.Typer) -> None`
STAGES = [
    "domainfm.code.curate.cli",
    "domainfm.code.tokenizer.cli",
    "domainfm.code.data.cli",
    "domainfm.code.model.cli",
    "domainfm.code.train.cli",
    "domainfm.code.generate.cli",
    "domainfm.code.evaluate.cli",
]


def build_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)
    for mod in STAGES:
        importlib.import_module(mod).register(app)
    return app
