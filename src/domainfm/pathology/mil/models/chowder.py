"""Chowder (Courtiol et al. 2018, arXiv:1802.02212) and its HistoSSLscaling configuration.

One Chowder network: a tile scorer (the paper's 1x1 convolution = one linear score per tile), the
MinMax layer (the R highest and the R lowest tile scores), an MLP on those 2R values. The paper
trains E such networks independently and averages their predictions; the tile-scoring layer carries
an L2 penalty (and only it). Published settings, pinned in tests/pathology/mil/test_mil_published.py:

* ``chowder-paper``  = Courtiol et al.: R = 5, L2 0.5 on the tile scorer, MLP (200, 100) with sigmoid
  activations, dropout 0.5 on the MLP, ensemble of E = 50.
* ``chowder``        = the same network with E = 10 (50 networks make every fit 50x slower; the paper
  reports the ensemble as a variance reducer, 10 keeps most of it at a fifth of the cost) and no
  dropout by default (``--dropout`` sets it).
* ``chowder-histossl`` = owkin/HistoSSLscaling ``conf/.../model/chowder.yaml``: n_top = n_bottom = 10,
  tile MLP (128) with sigmoid, MLP (128, 64) with sigmoid, Xavier-uniform init with zero biases, one
  network, no L2 term of its own (weight decay comes from the optimiser, as in that repo).

Padding-aware: padded tiles are pushed to the end of both orderings; when a bag has fewer than R
real tiles, the missing extremes repeat the last real one (its least extreme real score), so a
padded bag and the same bag unpadded give the same logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from domainfm.pathology.mil.models.base import MIL_MODELS, MILModel, MILOutput, full_mask


def min_max_layer(s: torch.Tensor, m: torch.Tensor, n_top: int, n_bottom: int) -> torch.Tensor:
    """(B, N) tile scores + (B, N) mask -> (B, n_top + n_bottom): highest scores descending, then lowest ascending."""
    B, N = s.shape
    n_valid = m.sum(1).clamp_min(1)  # (B,)
    desc = torch.sort(s.masked_fill(~m, float("-inf")), dim=1, descending=True).values  # padding last
    asc = torch.sort(s.masked_fill(~m, float("inf")), dim=1).values  # padding last

    def take(sorted_s: torch.Tensor, r: int) -> torch.Tensor:
        # position i reads index min(i, n_valid-1): bags with < r tiles repeat their last real score
        idx = torch.arange(r, device=s.device).unsqueeze(0).expand(B, r)
        idx = torch.minimum(idx, (n_valid - 1).unsqueeze(1)).clamp_max(N - 1)
        return sorted_s.gather(1, idx)  # (B, r)

    feats = torch.cat([take(desc, n_top), take(asc, n_bottom)], dim=1)
    return torch.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)  # only for an all-padding bag


class ChowderNet(nn.Module):
    """One Chowder network: tile scorer -> MinMax -> MLP."""

    def __init__(self, in_dim: int, n_top: int, n_bottom: int, mlp_hidden: Sequence[int],
                 tiles_mlp_hidden: Sequence[int], dropout: float, xavier: bool) -> None:
        super().__init__()
        self.n_top, self.n_bottom = n_top, n_bottom
        layers: list[nn.Module] = []
        d = in_dim
        for h in tiles_mlp_hidden:  # HistoSSLscaling's TilesMLP: Linear + Sigmoid per hidden layer
            layers += [nn.Linear(d, h), nn.Sigmoid()]
            d = h
        self.score_hidden = nn.Sequential(*layers)
        self.score = nn.Linear(d, 1)  # the tile-scoring layer (the paper's 1x1 convolution), L2-penalised
        mlp: list[nn.Module] = []
        d = n_top + n_bottom
        for h in mlp_hidden:  # sigmoid activations in both the paper and HistoSSLscaling
            mlp += [nn.Linear(d, h), nn.Sigmoid(), nn.Dropout(dropout)]
            d = h
        self.mlp = nn.Sequential(*mlp, nn.Linear(d, 1))
        if xavier:  # HistoSSLscaling's Chowder.weight_initialization
            for mod in self.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.xavier_uniform_(mod.weight)
                    nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.score(self.score_hidden(x)).squeeze(-1)  # (B, N) tile scores
        extremes = min_max_layer(s, m, self.n_top, self.n_bottom)  # (B, n_top + n_bottom)
        return self.mlp(extremes).squeeze(-1), s  # (B,), (B, N)


@MIL_MODELS.register("chowder")
class Chowder(MILModel):
    """Chowder (Courtiol et al. 2018): R=5 top/bottom tile scores, L2 0.5 on the scorer, MLP (200, 100), E=10 nets."""

    tile_score_kind = "logit"
    defaults: dict[str, Any] = {"n_extreme": 5, "n_bottom": None, "mlp_hidden": (200, 100), "tiles_mlp_hidden": (),
                                "l2": 0.5, "n_ensemble": 10, "xavier": False, "dropout": 0.0}

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float | None = None, **kw: Any) -> None:
        unknown = set(kw) - set(self.defaults)
        if unknown:
            raise TypeError(f"unknown Chowder argument(s): {', '.join(sorted(unknown))}")
        c = {**self.defaults, **kw}
        dropout = self.defaults["dropout"] if dropout is None else dropout
        super().__init__(in_dim, hidden, dropout)  # `hidden` is unused: kept for a uniform API
        self.n_extreme = int(c["n_extreme"])  # R = n_top
        self.n_bottom = int(c["n_bottom"] if c["n_bottom"] is not None else c["n_extreme"])
        self.mlp_hidden = tuple(int(h) for h in c["mlp_hidden"])
        self.tiles_mlp_hidden = tuple(int(h) for h in c["tiles_mlp_hidden"])
        self.l2 = float(c["l2"])
        self.n_ensemble = int(c["n_ensemble"])
        self.xavier = bool(c["xavier"])
        self.nets = nn.ModuleList(
            ChowderNet(in_dim, self.n_extreme, self.n_bottom, self.mlp_hidden, self.tiles_mlp_hidden, dropout,
                       self.xavier) for _ in range(self.n_ensemble))

    def hparams(self) -> dict:
        return {**super().hparams(), "n_extreme": self.n_extreme, "n_bottom": self.n_bottom,
                "mlp_hidden": list(self.mlp_hidden), "tiles_mlp_hidden": list(self.tiles_mlp_hidden),
                "l2": self.l2, "n_ensemble": self.n_ensemble, "xavier": self.xavier}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        outs = [net(x, m) for net in self.nets]
        member_logits = torch.stack([o[0] for o in outs])  # (E, B)
        tile_scores = torch.stack([o[1] for o in outs]).mean(0)  # (E, B, N) -> (B, N)
        # the ensemble's prediction is the mean of the members' probabilities (the paper averages predictions)
        p = torch.sigmoid(member_logits).mean(0).clamp(1e-7, 1 - 1e-7)
        return MILOutput(torch.logit(p), tile_scores * m, {"member_logits": member_logits})

    def loss(self, out: MILOutput, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over members of BCE(member) + l2 * ||w_score||^2: E independent trainings in one step
        (disjoint parameters, so each member gets exactly the gradient it would get alone)."""
        assert out.aux is not None
        bce = nn.functional.binary_cross_entropy_with_logits
        total = sum(bce(z, y) for z in out.aux["member_logits"])
        if self.l2:  # the paper's penalty is on the tile-scoring layer only (weights, not bias)
            total = total + self.l2 * sum(net.score.weight.pow(2).sum() for net in self.nets)
        return total


@MIL_MODELS.register("chowder-paper")
class ChowderPaper(Chowder):
    """Chowder exactly as published (Courtiol et al. 2018): R=5, L2 0.5, MLP (200, 100), dropout 0.5, E=50."""

    defaults = {**Chowder.defaults, "n_ensemble": 50, "dropout": 0.5}


@MIL_MODELS.register("chowder-histossl")
class ChowderHistoSSL(Chowder):
    """Chowder as configured in owkin/HistoSSLscaling: 10 top/10 bottom, tile MLP (128), MLP (128, 64), 1 net."""

    defaults = {**Chowder.defaults, "n_extreme": 10, "n_bottom": 10, "mlp_hidden": (128, 64),
                "tiles_mlp_hidden": (128,), "l2": 0.0, "n_ensemble": 1, "xavier": True}
