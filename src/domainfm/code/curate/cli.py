"""`domainfm code curate SRC... -o OUT [--config FILE.yaml] [--workers N] ...`.

Every `CurateConfig` field is a flag (`--max-file-size`, `--opt-out`, `--decontaminate FILE` ...)
and a YAML key of `--config`; flags override the YAML. Prints the funnel table at the end.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import typer

from domainfm.code.curate.config import CurateConfig
from domainfm.core.config import config_command, load_config
from domainfm.core.locks import writes_output


def _run(yaml_path: Path | None, **flags: Any) -> None:
    from domainfm.code.curate.pipeline import curate, funnel_table
    from domainfm.core.config import save_config

    cfg = load_config(CurateConfig, yaml_path, **flags)
    stats = curate(cfg)
    save_config(cfg, Path(cfg.out) / "config.yaml")
    typer.echo(funnel_table(stats))
    kept = ", ".join(f"{lang} {c['files']}" for lang, c in list(stats["languages"].items())[:8])
    typer.echo(f"kept {stats['files_out']:,} of {stats['files_in']:,} files ({kept}); "
               f"outputs in {cfg.out}/ (data/, removed/, dedup_clusters.parquet, pii.parquet, stats.json)")


def build_command() -> Any:
    """The typer command: config_command's flags + positional SRC... + `-o` + `--config FILE`."""
    base = config_command(CurateConfig, config_arg=False, positional=("sources",))(lambda cfg: None)
    params = []
    for p in base.__signature__.parameters.values():
        if p.name == "out":
            p.default.param_decls = ("-o", *p.default.param_decls)
        params.append(p)
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=typer.Option(
        None, "--config", help="YAML file of CurateConfig keys; flags override it", show_default=False)))

    @writes_output("out")
    def curate_cmd(**kwargs: Any) -> None:
        """Curate a code corpus: read, license-filter, quality-filter, dedup, redact PII, decontaminate."""
        yaml_path = kwargs.pop("config", None)
        _run(yaml_path, **kwargs)

    curate_cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    curate_cmd.__annotations__ = {**base.__annotations__, "config": typing.Optional[Path]}  # noqa: UP007, UP045
    return curate_cmd


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the domain's typer app."""
    app.command("curate")(build_command())
