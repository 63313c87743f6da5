"""The `domainfm` entry point: groups `code`, `pathology` and `demo`. Thin: parse, call, report.

User errors (a missing file, a bad flag, unreadable input) print one line on stderr and exit
non-zero; tracebacks are reserved for bugs (or `DOMAINFM_DEBUG=1`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from domainfm.core.errors import UserError
from domainfm.core.progress import setup_logging

app = typer.Typer(name="domainfm", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="From raw in-domain data to an evaluated, attributable foundation model.")
demo_app = typer.Typer(no_args_is_help=False, rich_markup_mode=None,
                       help="Run the end-to-end demo (both domains, or one).")


def _build() -> None:
    from domainfm.code.cli import build_app as build_code
    from domainfm.pathology.cli import build_app as build_pathology

    app.add_typer(build_code(), name="code", help="Source code: curate, tokenize, pack, pretrain, generate, evaluate.")
    app.add_typer(build_pathology(), name="pathology",
                  help="Histopathology: tile, pretrain (MoCo v2), extract, probe, MIL, heatmaps.")
    app.add_typer(demo_app, name="demo")
    app.command("report")(report)


def report(run_dir: Path = typer.Argument(..., help="a run folder (e.g. runs/demo)"),
           output: Path = typer.Option(Path("report.html"), "-o", "--output", help="the HTML page to write")) -> None:
    """One self-contained HTML page over the stages a run folder holds (images embedded, works offline)."""
    from domainfm.report import build_report

    res = build_report(run_dir, output)
    print(f"report: {res['path']} ({len(res['sections'])} sections, {res['images']} images, "
          f"{res['warnings']} warnings)")


@demo_app.callback(invoke_without_command=True)
def demo(ctx: typer.Context,
         out: Path = typer.Option(Path("runs/demo"), "-o", "--out", help="output folder"),
         workers: int = typer.Option(2, "--workers", help="worker processes"),
         quick: bool = typer.Option(False, "--quick", help="a smaller, faster walk")) -> None:
    """Both domains end to end (`domainfm demo code` or `domainfm demo pathology` for one)."""
    ctx.obj = {"out": out, "workers": workers, "quick": quick}
    if ctx.invoked_subcommand is None:
        _run_demo(("code", "pathology"), out, workers, quick)


@demo_app.command("code")
def demo_code(ctx: typer.Context) -> None:
    """The code-model walk: curate, tokenizer, pack, pretrain, generate, evaluate."""
    _run_demo(("code",), **ctx.obj)


@demo_app.command("pathology")
def demo_pathology(ctx: typer.Context) -> None:
    """The pathology walk: tile, MoCo pretrain, extract, probe, MIL, heatmap."""
    _run_demo(("pathology",), **ctx.obj)


def _run_demo(domains: tuple[str, ...], out: Path, workers: int, quick: bool) -> None:
    import importlib
    import time

    from domainfm.core.demo import DemoContext

    ctx = DemoContext.from_env(out, workers=workers, quick=quick)
    if ctx.data_dir is None:
        print("note: DOMAINFM_DATA is not set; the demo uses only data shipped in installed packages",
              file=sys.stderr)
    t0 = time.perf_counter()
    for dom in domains:
        importlib.import_module(f"domainfm.{dom}.demo").run(ctx)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s; outputs under {out}/")
    for stage, secs in ctx.timings.items():
        print(f"  {stage:<32} {secs:>7.1f}s")
    from domainfm.report import build_report, write_run_record

    write_run_record(out, ctx.timings, wall_s=time.perf_counter() - t0)
    print(f"report: {build_report(out, out / 'report.html')['path']}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (tests call this in-process)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `domainfm ... | head`: not an error worth a traceback
        sys.stderr.close()
        return 141


def _main(argv: list[str] | None) -> int:
    setup_logging(verbose=bool(os.environ.get("DOMAINFM_VERBOSE")))
    if not app.registered_groups:
        _build()
    try:
        rv = app(args=argv, prog_name="domainfm", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("domainfm: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # typer's (vendored click) usage errors: one line
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            print(exc.format_message())  # type: ignore[attr-defined]
            return 0
        print(f"domainfm: error: {exc.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except UserError as exc:
        if os.environ.get("DOMAINFM_DEBUG"):
            raise
        print(f"domainfm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("domainfm: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
