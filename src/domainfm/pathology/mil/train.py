"""Fit and apply one MIL model: Adam, batch 16, fixed epochs (HistoSSLscaling settings); the loss is the
model's own (`MILModel.loss`: BCE-with-logits on the slide logit unless its paper says otherwise).

No early stopping and no validation peeking: the number of epochs is a fixed setting, and
hyper-parameters are chosen by the inner folds of the nested cross-validation (see cv.py).
Everything random (init, batch order, tile sampling) derives from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domainfm.pathology.mil.data import collate


@dataclass
class TrainConfig:
    model: str = field(default="chowder", metadata={"help": "aggregator (see `domainfm pathology mil list`)"})
    epochs: int = field(default=50, metadata={"help": "training epochs"})
    batch_size: int = field(default=16, metadata={"help": "bags per batch"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    max_tiles: int = field(default=1000, metadata={"help": "tile cap per slide (random sample when training)"})
    hidden: int = field(default=0, metadata={"help": "hidden width of the aggregator (0: the model's published one)"})
    dropout: float | None = field(default=None, metadata={"help": "dropout in the aggregator (unset: the model's)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, cuda:1, mps)"})


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Only what the user set: the rest keeps each model's own (published) default."""
    kw: dict[str, Any] = {}
    if cfg.hidden:
        kw["hidden"] = cfg.hidden
    if cfg.dropout is not None:
        kw["dropout"] = cfg.dropout
    return kw


def fit(bags: list[np.ndarray], labels: np.ndarray, cfg: TrainConfig) -> Any:
    """Train a fresh `cfg.model` on (bags, labels); return the model in eval mode on `cfg.device`."""
    import torch

    from domainfm.pathology.mil.models import build_mil_model

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_mil_model(cfg.model, bags[0].shape[1], **model_kwargs(cfg)).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    model.train()
    for _ in range(cfg.epochs):
        order = rng.permutation(len(bags))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x, m = collate([bags[i] for i in idx], cfg.max_tiles, rng)
            out = model(x.to(cfg.device), m.to(cfg.device))
            loss = model.loss(out, y_all[idx].to(cfg.device), m.to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def predict(model: Any, bags: list[np.ndarray], batch_size: int = 16, device: str = "cpu",
            max_tiles: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """P(positive) per bag and per-tile scores (unpadded, one array per bag). Uses every tile unless capped."""
    import torch

    model.eval()
    probs, tiles = [], []
    # bags of similar size together keeps padding small
    order = np.argsort([len(b) for b in bags], kind="stable")
    out_p = np.zeros(len(bags), dtype=np.float64)
    out_t: list[np.ndarray] = [np.zeros(0)] * len(bags)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, m = collate([bags[i] for i in idx], max_tiles)
            out = model(x.to(device), m.to(device))
            p = torch.sigmoid(out.logits).double().cpu().numpy()
            ts = out.tile_scores.float().cpu().numpy()
            for j, i in enumerate(idx):
                out_p[i] = p[j]
                out_t[i] = ts[j, : int(m[j].sum())]
    probs, tiles = out_p, out_t
    return probs, tiles
