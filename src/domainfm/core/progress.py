"""Progress bars (with a rate) and logging set-up. Library code only logs; the CLI configures."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", unit_scale: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr showing count and rate. `DOMAINFM_PROGRESS=0` silences every bar."""
    disable = bool(kwargs.pop("disable", False)) or os.environ.get("DOMAINFM_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=disable,
                dynamic_ncols=True, mininterval=0.5, file=sys.stderr, **kwargs)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"domainfm.{name}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at emit time (in-process CLI tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def setup_logging(verbose: bool = False) -> None:
    """Configure the `domainfm` logger once (the CLI calls this; libraries never do)."""
    root = logging.getLogger("domainfm")
    if root.handlers:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
