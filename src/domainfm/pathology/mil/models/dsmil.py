"""DSMIL (Li et al. 2021, binli123/dsmil-wsi): a max-pooling instance stream plus an attention stream
around the critical (highest-scoring) tile.

As in the dsmil-wsi code (`dsmil.py` + `train_tcga.py`):
* instance stream: one linear score per tile; the max over the bag is the max-instance prediction;
* bag stream: queries q = Linear-ReLU-Linear-Tanh (width 128 = `hidden`), attention
  softmax(<q_i, q_crit> / sqrt(128)) over the bag, values = the tile features themselves
  (`passing_v=False`, the repo's default), bag logit = a linear layer on the weighted sum;
* loss = 0.5 * BCE(max-instance logit) + 0.5 * BCE(bag logit);
* prediction = 0.5 * sigmoid(max-instance logit) + 0.5 * sigmoid(bag logit) (the repo's test-time
  score); `logits` returns its logit so that sigmoid(logits) is that probability.

Tile scores are the instance-classifier logits (the max stream), the read-out DSMIL uses for
localisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, NEG, MILModel, MILOutput, full_mask, masked_softmax

# the published weights of the two terms (train_tcga.py: loss_total = 0.5*bag_loss + 0.5*max_loss)
MAX_WEIGHT = 0.5
BAG_WEIGHT = 0.5


@MIL_MODELS.register("dsmil")
class DSMIL(MILModel):
    """Dual-stream MIL: instance classifier + critical-instance attention; loss 0.5 BCE(max) + 0.5 BCE(bag)."""

    tile_score_kind = "logit"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0, passing_v: bool = False) -> None:
        super().__init__(in_dim, hidden, dropout)
        self.passing_v = passing_v
        self.instance = nn.Linear(in_dim, 1)  # max stream (the repo's FCLayer)
        self.query = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh())
        # passing_v=False (dsmil-wsi default): the values are the features; True: Dropout-Linear-ReLU
        self.value = (nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, in_dim), nn.ReLU())
                      if passing_v else nn.Identity())
        self.bag = nn.Linear(in_dim, 1)  # the repo's Conv1d over the bag embedding, for one class
        self.last_attention: torch.Tensor | None = None

    def hparams(self) -> dict:
        return {**super().hparams(), "passing_v": self.passing_v}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)
        c = self.instance(x).squeeze(-1)  # (B, N) instance logits
        c_masked = c.masked_fill(~m, NEG)
        crit = c_masked.argmax(1)  # (B,) index of the critical instance
        max_logit = c_masked.gather(1, crit.unsqueeze(1)).squeeze(1)  # (B,)
        max_logit = torch.where(m.any(1), max_logit, torch.zeros_like(max_logit))
        q = self.query(x)  # (B, N, hidden)
        q_crit = q.gather(1, crit.view(-1, 1, 1).expand(-1, 1, q.shape[-1]))  # (B, 1, hidden)
        sim = (q * q_crit).sum(-1) / math.sqrt(q.shape[-1])  # (B, N)
        a = masked_softmax(sim, m)
        self.last_attention = a.detach()
        v = self.value(x)  # (B, N, D)
        bag_emb = torch.bmm(a.unsqueeze(1), v).squeeze(1)  # (B, D)
        bag_logit = self.bag(bag_emb).squeeze(-1)  # (B,)
        p = (MAX_WEIGHT * torch.sigmoid(max_logit) + BAG_WEIGHT * torch.sigmoid(bag_logit)).clamp(1e-7, 1 - 1e-7)
        return MILOutput(torch.logit(p), c * m, {"max_logit": max_logit, "bag_logit": bag_logit})

    def loss(self, out: MILOutput, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert out.aux is not None
        bce = nn.functional.binary_cross_entropy_with_logits
        return MAX_WEIGHT * bce(out.aux["max_logit"], y) + BAG_WEIGHT * bce(out.aux["bag_logit"], y)
