"""Chowder (Courtiol et al. 2018): per-tile scores, top-R and bottom-R extreme scores, MLP on 2R.

Padding-aware: padded tiles are pushed to the end of both orderings; when a bag has fewer than R
real tiles, the missing extremes repeat the last real one (its least extreme real score), so a
padded bag and the same bag unpadded give the same logit.
"""

from __future__ import annotations

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, full_mask


@MIL_MODELS.register("chowder")
class Chowder(MILModel):
    """Per-tile linear score, top-R / bottom-R selection (R=10), MLP (200, 100) on the 2R scores."""

    tile_score_kind = "logit"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0, n_extreme: int = 10,
                 mlp_hidden: tuple[int, int] = (200, 100)) -> None:
        super().__init__(in_dim, hidden, dropout)
        self.n_extreme = n_extreme
        self.mlp_hidden = tuple(mlp_hidden)
        # the paper's 1x1 convolution = one linear score per tile (`hidden` unused: kept for a uniform API)
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, 1))
        h1, h2 = self.mlp_hidden
        # sigmoid activations as in the paper
        self.head = nn.Sequential(nn.Linear(2 * n_extreme, h1), nn.Sigmoid(), nn.Dropout(dropout),
                                  nn.Linear(h1, h2), nn.Sigmoid(), nn.Dropout(dropout), nn.Linear(h2, 1))

    def hparams(self) -> dict:
        return {**super().hparams(), "n_extreme": self.n_extreme, "mlp_hidden": list(self.mlp_hidden)}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        s = self.score(x).squeeze(-1)  # (B, N)
        B, N = s.shape
        n_valid = m.sum(1).clamp_min(1)  # (B,)
        # descending order with padding last; ascending order with padding last
        desc = torch.sort(s.masked_fill(~m, float("-inf")), dim=1, descending=True).values
        asc = torch.sort(s.masked_fill(~m, float("inf")), dim=1).values
        R = self.n_extreme
        # position i reads index min(i, n_valid-1): bags with < R tiles repeat their last real score
        idx = torch.arange(R, device=x.device).unsqueeze(0).expand(B, R)
        idx = torch.minimum(idx, (n_valid - 1).unsqueeze(1)).clamp_max(N - 1)
        top = desc.gather(1, idx)  # (B, R)
        bottom = asc.gather(1, idx)  # (B, R)
        feats = torch.cat([top, bottom], dim=1)
        feats = torch.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)  # only for an all-padding bag
        logits = self.head(feats).squeeze(-1)  # (B,)
        return MILOutput(logits, s * m)
