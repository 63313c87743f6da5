"""A domain's CLI is the ordered list of its stages: each stage module defines `register(app)`."""

from __future__ import annotations

import importlib

import typer


def stage_app(stages: list[str]) -> typer.Typer:
    """A typer group with the commands of every stage module in `stages`, in order."""
    app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)
    for mod in stages:
        importlib.import_module(mod).register(app)
    return app
