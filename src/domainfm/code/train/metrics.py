"""Run logs: OUT/metrics.jsonl (one line per logged step), TensorBoard events, the loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domainfm.core.io import atomic_write_text


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; a line cut short by a kill is ignored (it is rewritten on resume)."""
    p = Path(path)
    rows = []
    if not p.is_file():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Appends a JSON line per logged step (flushed at once) and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: str | Path, start_step: int, tensorboard: bool = True) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        # resuming at `start_step`: drop what a killed run logged after its last checkpoint, so the
        # file ends up exactly as an uninterrupted run's
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= start_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote after the checkpoint we resume from
            self._tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=start_step + 1 if start_step else None)

    def log(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(f"train/{key}" if key != "val_loss" else "val/loss", value, row["step"])

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def plot_loss(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Training (and validation) loss against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    xs = [r["step"] for r in rows if "loss" in r]
    ax.plot(xs, [r["loss"] for r in rows if "loss" in r], lw=1, label="train loss")
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png_path)
    fig.savefig(png)
    plt.close(fig)
    return png
