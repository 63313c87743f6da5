"""`domainfm pathology ...`: each stage subpackage registers its own commands (lazy heavy imports)."""

from __future__ import annotations

import importlib

import typer

STAGES = [
    "domainfm.pathology.slides.cli",
    "domainfm.pathology.ssl.cli",
    "domainfm.pathology.features.cli",
    "domainfm.pathology.mil.cli",
]


def build_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)
    for mod in STAGES:
        importlib.import_module(mod).register(app)
    return app
