"""`domainfm code presets`: every model preset with its parameter count (computed on the meta device)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the domain's typer app."""

    @app.command("presets")
    def presets(
        vocab_size: int = typer.Option(None, "--vocab-size", help="count with this vocabulary (default: the preset's)"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per preset"),
    ) -> None:
        """List the model presets with their parameter counts."""
        from domainfm.code.model import PRESETS, param_summary

        rows = [param_summary(name, vocab_size) for name in PRESETS.names()]
        if as_json:
            for r in rows:
                typer.echo(json.dumps(r))
            return
        typer.echo(f"{'preset':<16}{'class':<24}{'params':>10}{'non-emb':>10}{'layers':>8}{'hidden':>8}"
                   f"{'vocab':>8}{'context':>9}  description")
        for r in rows:
            typer.echo(f"{r['preset']:<16}{r['architecture']:<24}{_human(r['params']):>10}"
                       f"{_human(r['non_embedding_params']):>10}{r['layers']:>8}{r['hidden']:>8}{r['vocab']:>8}"
                       f"{r['context']:>9}  {PRESETS.describe(r['preset'])}")


def _human(n: int) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)
