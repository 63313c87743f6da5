"""`domainfm code pretrain [CONFIG.yaml] --data PACKED_DIR --preset tiny --max-steps N -o OUT_DIR`.

Every `PretrainConfig` field is both a YAML key and a flag (`batch_size` -> `--batch-size`). Multi-GPU
or multi-process CPU: `torchrun --nproc-per-node N -m domainfm code pretrain ...` (DDP; add `--fsdp`
to shard a model that does not fit one device).
`domainfm code export-checkpoint RUN/checkpoints/step_N [-o DIR]`: offline `final/` from a sharded checkpoint.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from domainfm.code.train.config import PretrainConfig
from domainfm.core.config import config_command
from domainfm.core.locks import output_lock, writes_output


def _add_short_flag(command, name: str, short: str):  # noqa: ANN001, ANN202 - typer plumbing
    """Give the option of field `name` an extra short spelling (`-o` for `--out`)."""
    sig = command.__signature__
    for p in sig.parameters.values():
        if p.name == name:
            p.default.param_decls = (short, *p.default.param_decls)
    return command


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the domain's typer app."""

    @config_command(PretrainConfig)
    @writes_output("out")
    def pretrain(cfg: PretrainConfig) -> None:
        """Pretrain a StarCoder-family model on packed shards; resumes from OUT's last checkpoint."""
        from domainfm.code.train import pretrain as run

        summary = run(cfg)
        if summary:  # rank 0
            typer.echo(json.dumps({k: summary[k] for k in ("steps", "tokens_seen", "final_loss", "final_val_loss",
                                                            "final", "loss_png")}, indent=2))

    app.command("pretrain")(_add_short_flag(pretrain, "out", "-o"))

    @app.command("export-checkpoint")
    def export_checkpoint(
        checkpoint: Path = typer.Argument(..., help="a sharded checkpoint (RUN/checkpoints/step_*) or a run "
                                                    "folder (its newest checkpoint)"),
        out: Path = typer.Option(None, "-o", "--out", help="transformers folder to write [default: RUN/final]"),
        max_shard_mb: float = typer.Option(2048.0, "--max-shard-mb",
                                           help="MiB per safetensors file (peak memory is about twice this)"),
    ) -> None:
        """Convert a sharded (FSDP / DCP) checkpoint into a transformers folder, streaming the weights."""
        from domainfm.code.train.export import export_checkpoint as run

        with output_lock(out) if out else contextlib.nullcontext():
            typer.echo(str(run(checkpoint, out, max_shard_mb=max_shard_mb)))
