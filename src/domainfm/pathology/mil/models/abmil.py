"""ABMIL / DeepMIL (Ilse et al. 2018) with gated attention: a = w^T (tanh(V h) * sigmoid(U h)).

The tile features are first projected (D -> hidden, ReLU), as CLAM does; the attention weights
(softmax over the real tiles, 0 on padding) are the per-tile scores and are exposed as
`last_attention` after each forward for inspection.
"""

from __future__ import annotations

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, full_mask, masked_softmax, mlp


@MIL_MODELS.register("abmil")
class ABMIL(MILModel):
    """Gated-attention MIL: projection, gated attention pooling, MLP classifier."""

    tile_score_kind = "attention"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0, attn_dim: int = 64) -> None:
        super().__init__(in_dim, hidden, dropout)
        self.attn_dim = attn_dim
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden, attn_dim)  # tanh branch
        self.attn_u = nn.Linear(hidden, attn_dim)  # sigmoid gate
        self.attn_w = nn.Linear(attn_dim, 1)
        self.head = mlp(hidden, hidden, dropout)
        self.last_attention: torch.Tensor | None = None

    def hparams(self) -> dict:
        return {**super().hparams(), "attn_dim": self.attn_dim}

    def attention(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden) projected tiles -> (B, N) attention weights summing to 1 over real tiles."""
        a = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)
        return masked_softmax(a, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)
        h = self.project(x)  # (B, N, hidden)
        a = self.attention(h, m)  # (B, N)
        z = torch.bmm(a.unsqueeze(1), h).squeeze(1)  # (B, hidden)
        self.last_attention = a.detach()
        return MILOutput(self.head(z).squeeze(-1), a)
