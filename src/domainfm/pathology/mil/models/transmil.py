"""TransMIL (Shao et al. 2021, NeurIPS; the authors' code szc19990412/TransMIL, `models/TransMIL.py`).

    tiles (1, n, D) --fc1 + ReLU--> (1, n, dim) --square--> (1, s*s, dim) --[CLS]--> (1, 1 + s*s, dim)
      --TransLayer--> --PPEG--> --TransLayer--> LayerNorm --[CLS]--> Linear --> slide logit

* square: s = ceil(sqrt(n)); the sequence is completed to s*s tokens by repeating its first
  s*s - n tiles (as published), so the tiles can be laid on an s x s grid for PPEG;
* TransLayer: x + NystromAttention(LayerNorm(x)) with 8 heads of dim/8, dim/2 landmarks,
  6 Moore-Penrose iterations, the residual depthwise convolution on V, dropout 0.1 (the published
  arguments), from the `nystrom-attention` package the authors' code imports;
* PPEG: the tile tokens on the s x s grid + three depthwise convolutions (7x7, 5x5, 3x3), the class
  token passed through;
* binary here: one logit trained with BCE (the paper's two-class softmax has one free logit).

The tile order matters (positional encoding): this model is not permutation invariant, by design.
Each bag is run on its real tiles only (a loop over the batch), so padding never enters the
attention, the squaring or the convolutions. Tile scores: the class token's attention to each tile
in the second TransLayer (the Nystrom approximation of that row, mean over heads).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, full_mask

HEADS = 8  # published: heads = 8, dim_head = dim // 8
PINV_ITERATIONS = 6


class TransLayer(nn.Module):
    """Pre-norm Nystrom self-attention with a residual connection (no MLP block, as published)."""

    def __init__(self, dim: int, attn_dropout: float) -> None:
        super().__init__()
        from nystrom_attention import NystromAttention

        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim=dim, dim_head=dim // HEADS, heads=HEADS, num_landmarks=dim // 2,
                                     pinv_iterations=PINV_ITERATIONS, residual=True, dropout=attn_dropout)

    def forward(self, x: torch.Tensor, cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1, L, dim) -> (1, L, dim) and, if asked, the class token's attention row (1, L)."""
        if not cls_attention:
            return x + self.attn(self.norm(x)), None
        out, (a1, a2_inv, a3) = self.attn(self.norm(x), return_attn_matrices=True)
        # the library pads the sequence at the front to a multiple of the landmarks: CLS sits at `pad`
        L = x.shape[1]
        pad = a1.shape[2] - L
        row = a1[:, :, pad:pad + 1] @ a2_inv @ a3  # (1, heads, 1, L + pad)
        return x + out, row[:, :, 0, pad:].mean(1)  # (1, L)


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise 7x7, 5x5 and 3x3 convolutions on the s x s token grid, summed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj7 = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj5 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj3 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        B, _, C = x.shape  # (B, 1 + side*side, C)
        cls, feat = x[:, :1], x[:, 1:]
        grid = feat.transpose(1, 2).reshape(B, C, side, side)  # (B, C, side, side), row-major
        grid = grid + self.proj7(grid) + self.proj5(grid) + self.proj3(grid)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


@MIL_MODELS.register("transmil")
class TransMIL(MILModel):
    """TransMIL (Shao et al. 2021): Nystrom-attention transformer with PPEG position encoding and a class token."""

    tile_score_kind = "attention"
    permutation_invariant = False

    def __init__(self, in_dim: int, hidden: int = 512, dropout: float = 0.0, attn_dropout: float = 0.1) -> None:
        super().__init__(in_dim, hidden, dropout)
        if hidden % HEADS or hidden < 2 * HEADS:
            raise ValueError(f"TransMIL width {hidden} must be a multiple of {HEADS} (>= {2 * HEADS})")
        self.attn_dropout = attn_dropout
        self.fc1 = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden))
        self.layer1 = TransLayer(hidden, attn_dropout)
        self.ppeg = PPEG(hidden)
        self.layer2 = TransLayer(hidden, attn_dropout)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def hparams(self) -> dict:
        return {**super().hparams(), "attn_dropout": self.attn_dropout}

    def one_bag(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, n, D) real tiles -> slide logit (1,) and the tiles' attention scores (n,)."""
        n = x.shape[1]
        h = self.fc1(x)  # (1, n, dim)
        side = math.ceil(math.sqrt(n))
        h = torch.cat([h, h[:, : side * side - n]], dim=1)  # (1, side*side, dim): square by repeating tiles
        h = torch.cat([self.cls_token, h], dim=1)  # (1, 1 + side*side, dim)
        h, _ = self.layer1(h)
        h = self.ppeg(h, side)
        h, row = self.layer2(h, cls_attention=True)
        z = self.norm(h)[:, 0]  # (1, dim): the class token
        assert row is not None
        return self.head(z).squeeze(-1), row[0, 1:1 + n]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        B, N = m.shape
        logits = x.new_zeros(B)
        scores = x.new_zeros(B, N)
        for b in range(B):  # each bag on its own real tiles, in their order
            idx = m[b].nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            logit, s = self.one_bag(x[b:b + 1, idx])
            logits = logits.index_put((torch.tensor([b], device=x.device),), logit)
            scores = scores.index_put((torch.full_like(idx, b), idx), s)
        return MILOutput(logits, scores)
