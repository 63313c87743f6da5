"""`domainfm pathology pretrain`: MoCo v2 self-supervised pretraining on tiles (heavy imports inside)."""

from __future__ import annotations

import typer

from domainfm.core.config import config_command
from domainfm.core.locks import writes_output
from domainfm.pathology.ssl.config import MocoConfig


def register(app: typer.Typer) -> None:
    """Add `pretrain` to the pathology app."""

    @writes_output("output")
    def pretrain_cmd(cfg: MocoConfig) -> None:
        from domainfm.pathology.ssl.train import pretrain

        pretrain(cfg)

    cmd = config_command(MocoConfig, config_arg=False, positional=("tiles",))(pretrain_cmd)
    add_short_flag(cmd, "output", "-o")  # -o as the short form of --output
    app.command("pretrain", help="MoCo v2 pretraining on tile images -> an encoder folder (e.g. pretrain "
                "PCAM/train -o enc --backbone resnet18 --image-size 64 --max-steps 500).")(cmd)


def add_short_flag(fn: object, field_name: str, short: str) -> None:
    """Give the option of dataclass field `field_name` an extra short flag (e.g. -o)."""
    import inspect

    sig = inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        if p.name == field_name:
            info = p.default
            info.param_decls = (*info.param_decls, short)
        params.append(p)
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
