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


class EnsembleLinear(nn.Module):
    """E independent linear layers applied side by side: (E, ..., in) -> (E, ..., out).

    Each member is initialised like its own `nn.Linear` (PyTorch default) or Xavier-uniform with zero
    bias; members share no parameter, so training them together is training them independently."""

    def __init__(self, n: int, in_dim: int, out_dim: int, xavier: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out_dim, in_dim))  # (E, out, in)
        self.bias = nn.Parameter(torch.empty(n, out_dim))  # (E, out)
        for e in range(n):
            if xavier:
                nn.init.xavier_uniform_(self.weight.data[e])
                nn.init.zeros_(self.bias.data[e])
            else:  # nn.Linear.reset_parameters
                nn.init.kaiming_uniform_(self.weight.data[e], a=5 ** 0.5)
                nn.init.uniform_(self.bias.data[e], -in_dim ** -0.5, in_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (E, M, in) -> (E, M, out), M = everything between the member axis and the features
        shape = x.shape
        y = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(shape[0], -1, shape[-1]), self.weight.transpose(1, 2))
        return y.reshape(*shape[:-1], -1)


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
        # all E networks side by side (one batched matmul per layer instead of a Python loop over E)
        E = self.n_ensemble
        layers: list[nn.Module] = []
        d = in_dim
        for h in self.tiles_mlp_hidden:  # HistoSSLscaling's TilesMLP: Linear + Sigmoid per hidden layer
            layers += [EnsembleLinear(E, d, h, self.xavier), nn.Sigmoid()]
            d = h
        self.score_hidden = nn.Sequential(*layers)
        self.score = EnsembleLinear(E, d, 1, self.xavier)  # the tile-scoring layer (1x1 conv), L2-penalised
        mlp: list[nn.Module] = []
        d = self.n_extreme + self.n_bottom
        for h in self.mlp_hidden:  # sigmoid activations in both the paper and HistoSSLscaling
            mlp += [EnsembleLinear(E, d, h, self.xavier), nn.Sigmoid(), nn.Dropout(dropout)]
            d = h
        self.mlp = nn.Sequential(*mlp, EnsembleLinear(E, d, 1, self.xavier))

    def hparams(self) -> dict:
        return {**super().hparams(), "n_extreme": self.n_extreme, "n_bottom": self.n_bottom,
                "mlp_hidden": list(self.mlp_hidden), "tiles_mlp_hidden": list(self.tiles_mlp_hidden),
                "l2": self.l2, "n_ensemble": self.n_ensemble, "xavier": self.xavier}

    def member_outputs(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D), (B, N) -> member logits (E, B) and member tile scores (E, B, N)."""
        E, (B, N, _) = self.n_ensemble, x.shape
        h = self.score_hidden(x.unsqueeze(0).expand(E, -1, -1, -1))  # (E, B, N, d)
        s = self.score(h).squeeze(-1)  # (E, B, N)
        extremes = min_max_layer(s.reshape(E * B, N), m.repeat(E, 1), self.n_extreme, self.n_bottom)
        return self.mlp(extremes.reshape(E, B, -1)).squeeze(-1), s  # (E, B), (E, B, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        m = full_mask(x, mask)  # (B, N)
        member_logits, s = self.member_outputs(x, m)
        tile_scores = s.mean(0)  # (B, N): the members' mean tile score
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
            total = total + self.l2 * self.score.weight.pow(2).sum()  # (E, 1, d): every member's own term
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
