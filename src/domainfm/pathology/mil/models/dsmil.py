"""DSMIL (Li et al. 2021): a max-pooling instance stream plus an attention stream around the
critical (highest-scoring) tile; the slide logit is the mean of the two streams' logits.

Tile scores are the instance-classifier logits (the max stream), the read-out DSMIL uses for
localisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, NEG, MILModel, MILOutput, full_mask, masked_softmax


@MIL_MODELS.register("dsmil")
class DSMIL(MILModel):
    """Dual-stream MIL: instance classifier + critical-instance attention (queries of size `hidden`)."""

    tile_score_kind = "logit"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__(in_dim, hidden, dropout)
        self.instance = nn.Linear(in_dim, 1)  # max stream
        self.query = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh())
        self.value = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, in_dim), nn.ReLU())
        self.bag = nn.Linear(in_dim, 1)  # the paper's Conv1d over the bag embedding, for one class
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)
        c = self.instance(x).squeeze(-1)  # (B, N) instance logits
        c_masked = c.masked_fill(~m, NEG)
        crit = c_masked.argmax(1)  # (B,) index of the critical instance
        max_logit = c_masked.gather(1, crit.unsqueeze(1)).squeeze(1)  # (B,)
        q = self.query(x)  # (B, N, hidden)
        q_crit = q.gather(1, crit.view(-1, 1, 1).expand(-1, 1, q.shape[-1]))  # (B, 1, hidden)
        sim = (q * q_crit).sum(-1) / math.sqrt(q.shape[-1])  # (B, N)
        a = masked_softmax(sim, m)
        self.last_attention = a.detach()
        v = self.value(x)  # (B, N, D)
        bag_emb = torch.bmm(a.unsqueeze(1), v).squeeze(1)  # (B, D)
        bag_logit = self.bag(bag_emb).squeeze(-1)  # (B,)
        max_logit = torch.where(m.any(1), max_logit, torch.zeros_like(max_logit))
        return MILOutput(0.5 * (max_logit + bag_logit), c * m)
