"""CLAM-SB (Lu et al. 2021, Nature Biomedical Engineering; mahmoodlab/CLAM `models/model_clam.py`).

    tiles (B, N, D) --Linear + ReLU + Dropout--> h (B, N, 512)
      gated attention a = W_c (tanh(W_a h) * sigmoid(W_b h)) (256 wide) -> softmax over the bag
      slide embedding = sum_i a_i h_i -> linear classifier -> slide logit

Training adds CLAM's instance-level clustering: for a bag of label y, the k_sample = 8 tiles with the
highest attention are pseudo-labelled "in class" and the 8 lowest "out of class" for the instance
classifier of class y (a Linear(512, 2) per class); loss = bag_weight * bag loss + (1 - bag_weight)
* instance loss, bag_weight = 0.7 (CLAM's defaults; `subtyping=False`: no out-of-the-class term).
The instance loss is cross-entropy (CLAM's default) or the smooth top-1 SVM of Berrada et al. 2018
(CLAM's `--inst_loss svm`, alpha = tau = 1). Binary here: one slide logit with BCE (the published
two-class softmax has one free logit). Bags with fewer than k_sample tiles use all their tiles.
"""

from __future__ import annotations

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, full_mask, masked_softmax


def smooth_top1_svm(logits: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, tau: float = 1.0) -> torch.Tensor:
    """Smooth top-1 SVM (Berrada et al. 2018): tau * log sum_j exp((alpha [j != y] + s_j - s_y) / tau), batch mean.

    logits (M, C), target (M,) long."""
    margin = alpha * (1.0 - nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype))  # (M, C)
    z = logits + margin - logits.gather(1, target[:, None])  # (M, C)
    return (tau * torch.logsumexp(z / tau, dim=1)).mean()


INSTANCE_LOSSES = {"ce": nn.functional.cross_entropy, "svm": smooth_top1_svm}


@MIL_MODELS.register("clam-sb")
class CLAMSB(MILModel):
    """CLAM-SB (Lu et al. 2021): gated attention + instance clustering loss (k_sample 8, bag_weight 0.7)."""

    tile_score_kind = "attention"

    def __init__(self, in_dim: int, hidden: int = 512, dropout: float = 0.0, attn_dim: int = 256,
                 k_sample: int = 8, bag_weight: float = 0.7, inst_loss: str = "ce") -> None:
        super().__init__(in_dim, hidden, dropout)
        if inst_loss not in INSTANCE_LOSSES:
            raise ValueError(f"inst_loss {inst_loss!r}: choose {', '.join(INSTANCE_LOSSES)}")
        self.attn_dim, self.k_sample, self.bag_weight, self.inst_loss = attn_dim, k_sample, bag_weight, inst_loss
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention_a = nn.Sequential(nn.Linear(hidden, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(hidden, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(hidden, 1)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(2))  # one per class
        for mod in self.modules():  # CLAM's initialize_weights
            if isinstance(mod, nn.Linear):
                nn.init.xavier_normal_(mod.weight)
                nn.init.zeros_(mod.bias)

    def hparams(self) -> dict:
        return {**super().hparams(), "attn_dim": self.attn_dim, "k_sample": self.k_sample,
                "bag_weight": self.bag_weight, "inst_loss": self.inst_loss}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        h = self.fc(x)  # (B, N, hidden)
        a = self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)  # (B, N) raw attention
        a = masked_softmax(a, m)  # (B, N)
        z = torch.bmm(a.unsqueeze(1), h).squeeze(1)  # (B, hidden)
        return MILOutput(self.classifier(z).squeeze(-1), a, {"attention": a, "h": h})

    def instance_loss(self, a: torch.Tensor, h: torch.Tensor, m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the bags of CLAM's in-the-class instance loss (inst_eval) for each bag's own class."""
        fn = INSTANCE_LOSSES[self.inst_loss]
        losses = []
        for b in range(a.shape[0]):
            idx = m[b].nonzero().squeeze(1)
            k = min(self.k_sample, len(idx))
            if k == 0:
                continue
            ab, hb = a[b, idx], h[b, idx]  # (n,), (n, hidden)
            top, bottom = torch.topk(ab, k).indices, torch.topk(-ab, k).indices
            inst = torch.cat([hb[top], hb[bottom]])  # (2k, hidden)
            target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(a.device)
            losses.append(fn(self.instance_classifiers[int(y[b])](inst), target))
        return torch.stack(losses).mean() if losses else a.sum() * 0

    def loss(self, out: MILOutput, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        assert out.aux is not None
        a, h = out.aux["attention"], out.aux["h"]
        m = full_mask(h, mask)
        bag = nn.functional.binary_cross_entropy_with_logits(out.logits, y)
        return self.bag_weight * bag + (1 - self.bag_weight) * self.instance_loss(a, h, m, y)
