"""New plots, only for stages that write numbers but no figure (the curation funnel, a loss log without
its PNG). matplotlib with the Agg backend; each returns PNG bytes that the page embeds."""

from __future__ import annotations

import io
from collections.abc import Sequence


def _png(fig) -> bytes:  # noqa: ANN001 - a matplotlib Figure
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(w: float, h: float):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")  # no display: the report runs headless
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def funnel_png(steps: Sequence[str], files: Sequence[int], bytes_: Sequence[int]) -> bytes:
    """Files (bars) and MB (line) left after each curation step, in pipeline order."""
    fig, ax = _figure(7.5, 3.0)
    x = range(len(steps))
    ax.bar(x, files, color="#4c78a8", label="files")
    ax.set_ylabel("files")
    ax.set_xticks(list(x), list(steps), rotation=30, ha="right", fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(list(x), [b / 1e6 for b in bytes_], color="#f58518", marker="o", label="MB")
    ax2.set_ylabel("MB")
    ax2.set_ylim(bottom=0)
    ax.set_title("curation funnel: what is left after each step", fontsize=10, loc="left")
    # one legend for both axes, above the plot on the right (it would hide bars or the MB axis inside)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    return _png(fig)


def curve_png(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
              title: str) -> bytes:
    """One line per named (x, y) series (a loss log that has no plot of its own)."""
    fig, ax = _figure(6.0, 3.2)
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name, marker="." if len(xs) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)
