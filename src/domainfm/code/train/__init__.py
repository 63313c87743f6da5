"""Pretraining of StarCoder-family models: `pretrain(PretrainConfig(...))` or `domainfm code pretrain`."""

from __future__ import annotations

from typing import Any

from domainfm.code.train.config import PretrainConfig


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train (or resume) per `cfg`, export OUT/final; returns the run summary. See `trainer.py`."""
    from domainfm.code.train.trainer import pretrain as _pretrain

    return _pretrain(cfg)


__all__ = ["PretrainConfig", "pretrain"]
