"""The common interface of the MIL aggregators, the registry, and masked helpers they share."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from domainfm.core.registry import Registry

MIL_MODELS: Registry[type[MILModel]] = Registry("MIL model")

# a large finite value instead of inf: keeps max/softmax NaN-free even on an all-padding row
NEG = -1e9


class MILOutput(NamedTuple):
    logits: torch.Tensor  # (B,) slide logit, P(positive) = sigmoid(logit)
    tile_scores: torch.Tensor  # (B, N) per-tile score for heatmaps (0 at padded positions)
    # what a model's own training loss needs beyond the slide logit (DSMIL's max-instance logit,
    # CLAM's attention and tile embeddings, ...); None for models trained on the slide logit alone
    aux: dict[str, Any] | None = None


class MILModel(nn.Module):
    """Base class: `forward(x (B,N,D), mask (B,N) bool) -> MILOutput`.

    `tile_score_kind` says what the per-tile scores mean (drawn on heatmaps): "logit" = the tile's
    own positive-class evidence, "attention" = weight the tile received in the slide embedding.
    """

    tile_score_kind: str = "logit"
    # False for models that read the tiles as a sequence (TransMIL's positional encoding): the
    # contract test then checks padding invariance only
    permutation_invariant: bool = True

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.hidden = hidden
        self.dropout = dropout

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments, saved with the weights so the model can be rebuilt."""
        return {"in_dim": self.in_dim, "hidden": self.hidden, "dropout": self.dropout}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, out: MILOutput, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of one batch (y (B,) float 0/1). Default: BCE-with-logits on the slide logit;
        models whose paper trains them otherwise (DSMIL, CLAM, Chowder's L2 term) override it."""
        return nn.functional.binary_cross_entropy_with_logits(out.logits, y)


def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The (B, N) bool mask; all True when none is given."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(dtype=torch.bool, device=x.device)


def mlp(in_dim: int, hidden: int, dropout: float, out_dim: int = 1) -> nn.Sequential:
    """One hidden layer MLP head (ReLU + dropout)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over N of (B, N) logits, exactly 0 at padded positions."""
    w = torch.softmax(logits.masked_fill(~mask, NEG), dim=1)
    return w * mask


def build_mil_model(name: str, in_dim: int, **kwargs: Any) -> MILModel:
    """Instantiate a registered aggregator by name (unknown names list the known ones)."""
    return MIL_MODELS.get(name)(in_dim=in_dim, **kwargs)
