"""MeanPool and MaxPool: masked pooling of the tile embeddings, then an MLP (the simplest baselines).

Tile scores: the same MLP head applied to each tile alone, i.e. what the model would say of a bag
made of that single tile. It is the natural per-tile read-out of a pooled-embedding model.
"""

from __future__ import annotations

import torch

from domainfm.pathology.mil.models.base import MIL_MODELS, NEG, MILModel, MILOutput, full_mask, mlp


class _PoolMLP(MILModel):
    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__(in_dim, hidden, dropout)
        self.head = mlp(in_dim, hidden, dropout)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        z = self.pool(x, m)  # (B, D)
        logits = self.head(z).squeeze(-1)  # (B,)
        tile_scores = self.head(x).squeeze(-1) * m  # (B, N)
        return MILOutput(logits, tile_scores)


@MIL_MODELS.register("meanpool")
class MeanPool(_PoolMLP):
    """Masked mean of the tile features, then an MLP."""

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


@MIL_MODELS.register("maxpool")
class MaxPool(_PoolMLP):
    """Masked element-wise max of the tile features, then an MLP."""

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = x.masked_fill(~mask.unsqueeze(-1), NEG).amax(1)  # (B, D)
        # an all-padding bag (never produced by our loaders) pools to 0 rather than -1e9
        return torch.where(mask.any(1, keepdim=True), z, torch.zeros_like(z))

