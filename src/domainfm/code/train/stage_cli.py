"""`domainfm code pretrain-long-context [CONFIG.yaml] --init-from BASE_RUN --data PACKED_16K -o OUT`.

Every `LongContextConfig` field is a YAML key and a flag (the `code pretrain` ones, plus `--init-from`,
`--rope-theta`, `--context`, `--sliding-window`); torchrun works as for `code pretrain`.
"""

from __future__ import annotations

import json

import typer

from domainfm.code.train.cli import _add_short_flag
from domainfm.core.config import config_command
from domainfm.core.locks import writes_output


def register(app: typer.Typer) -> None:
    """Add the long-context stage command to the code app."""
    from domainfm.code.train.stage_config import LongContextConfig

    @config_command(LongContextConfig)
    @writes_output("out")
    def pretrain_long_context(cfg: LongContextConfig) -> None:
        """Continue a base run at a longer context with a new RoPE theta (StarCoder2's second stage); resumes."""
        from domainfm.code.train.stages import pretrain_long_context as run

        summary = run(cfg)
        if summary:  # rank 0
            typer.echo(json.dumps({k: summary[k] for k in ("steps", "tokens_seen", "final_loss", "final_val_loss",
                                                            "final", "loss_png")}, indent=2))

    app.command("pretrain-long-context")(_add_short_flag(pretrain_long_context, "out", "-o"))  # as `code pretrain`
