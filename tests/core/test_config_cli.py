"""Dataclass config <-> YAML <-> CLI flags, and the CLI's one-line user errors (in-process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
import yaml

from domainfm.cli import main
from domainfm.core.config import config_command, load_config, save_config
from domainfm.core.errors import UserError


@dataclass
class TrainCfg:
    data: str = field(default="", metadata={"help": "packed data"})
    batch_size: int = field(default=8, metadata={"help": "batch"})
    lr: float = 3e-4
    compile: bool = False
    tags: list[str] = field(default_factory=list)
    out: Path | None = field(default=None, metadata={"short": "-o"})


def _app() -> typer.Typer:
    app = typer.Typer()
    seen: list[TrainCfg] = []

    @app.command("train")
    @config_command(TrainCfg, positional=("data",))
    def train(cfg: TrainCfg) -> None:
        seen.append(cfg)

    @app.command("other")
    def other() -> None:
        pass

    app.seen = seen  # type: ignore[attr-defined]
    return app


def _run(app: typer.Typer, args: list[str]) -> int:
    try:
        app(args=args, standalone_mode=False)
    except UserError:
        return 2
    return 0


def test_precedence_defaults_yaml_flags(tmp_path: Path) -> None:
    app = _app()
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"batch_size": 32, "lr": 0.1, "tags": ["a", "b"]}))
    assert _run(app, ["train", str(y), "x"]) == 0
    cfg = app.seen[-1]  # type: ignore[attr-defined]
    assert cfg.data == "x"
    assert (cfg.batch_size, cfg.lr, cfg.tags, cfg.compile) == (32, 0.1, ["a", "b"], False)
    _run(app, ["train", str(y), "--batch-size", "4", "--compile"])
    cfg = app.seen[-1]  # type: ignore[attr-defined]
    assert (cfg.batch_size, cfg.lr, cfg.compile) == (4, 0.1, True)
    _run(app, ["train", "-o", "somewhere"])
    assert app.seen[-1].out == Path("somewhere")  # type: ignore[attr-defined]
    _run(app, ["train"])
    assert app.seen[-1] == TrainCfg()  # type: ignore[attr-defined]


def test_load_config_errors(tmp_path: Path) -> None:
    y = tmp_path / "bad.yaml"
    y.write_text("batch_sise: 3\n")
    with pytest.raises(UserError, match="unknown config key 'batch_sise'"):
        load_config(TrainCfg, y)
    y.write_text("batch_size: many\n")
    with pytest.raises(UserError, match="cannot read 'many' as int"):
        load_config(TrainCfg, y)
    with pytest.raises(UserError, match="not found"):
        load_config(TrainCfg, tmp_path / "nope.yaml")


def test_save_config_roundtrip(tmp_path: Path) -> None:
    cfg = TrainCfg(data="d", batch_size=2, tags=["x"], out=Path("o"))
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(TrainCfg, tmp_path / "config.yaml") == cfg


def test_cli_user_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "--no-such-flag"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "domainfm: error: No such option: --no-such-flag"
    assert main(["nosuchgroup"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("domainfm: error:") and "\n" not in err


def test_cli_help_lists_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in ("code", "pathology", "demo"):
        assert group in out
