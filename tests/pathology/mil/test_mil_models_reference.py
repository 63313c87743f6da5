"""Each aggregator against a hand-written reference on one unpadded bag."""

from __future__ import annotations

import torch

from domainfm.pathology.mil.models import build_mil_model

D = 8


def test_meanpool_is_mlp_of_mean() -> None:
    m = build_mil_model("meanpool", D, hidden=5).eval()
    x = torch.randn(1, 6, D)
    torch.testing.assert_close(m(x).logits, m.head(x.mean(1)).squeeze(-1))


def test_maxpool_is_mlp_of_max() -> None:
    m = build_mil_model("maxpool", D, hidden=5).eval()
    x = torch.randn(1, 6, D)
    torch.testing.assert_close(m(x).logits, m.head(x.max(1).values).squeeze(-1))


def test_chowder_top_bottom_r() -> None:
    m = build_mil_model("chowder", D, n_extreme=2).eval()
    x = torch.randn(1, 6, D)
    s = m.score(x).squeeze(-1)[0]
    srt = torch.sort(s, descending=True).values
    feats = torch.cat([srt[:2], torch.flip(srt, [0])[:2]]).unsqueeze(0)
    torch.testing.assert_close(m(x).logits, m.head(feats).squeeze(-1))
    torch.testing.assert_close(m(x).tile_scores[0], s)


def test_chowder_short_bag_repeats_last_extreme() -> None:
    m = build_mil_model("chowder", D, n_extreme=4).eval()
    x = torch.randn(1, 2, D)
    s = m.score(x).squeeze(-1)[0]
    hi, lo = s.max(), s.min()
    feats = torch.stack([hi, lo, lo, lo, lo, hi, hi, hi]).unsqueeze(0)
    torch.testing.assert_close(m(x).logits, m.head(feats).squeeze(-1))


def test_abmil_gated_attention() -> None:
    m = build_mil_model("abmil", D, hidden=6, attn_dim=3).eval()
    x = torch.randn(1, 5, D)
    h = m.project(x)[0]
    a = m.attn_w(torch.tanh(m.attn_v(h)) * torch.sigmoid(m.attn_u(h))).squeeze(-1)
    a = torch.softmax(a, 0)
    out = m(x)
    torch.testing.assert_close(out.tile_scores[0], a)
    torch.testing.assert_close(m.last_attention[0], a)
    torch.testing.assert_close(out.logits, m.head((a[:, None] * h).sum(0, keepdim=True)).squeeze(-1))
    assert abs(float(out.tile_scores.sum()) - 1.0) < 1e-5


def test_dsmil_two_streams() -> None:
    m = build_mil_model("dsmil", D, hidden=4).eval()
    x = torch.randn(1, 5, D)
    c = m.instance(x)[0, :, 0]
    crit = int(c.argmax())
    q = m.query(x)[0]
    a = torch.softmax(q @ q[crit] / 2.0, 0)  # sqrt(hidden=4) = 2
    bag = m.bag((a[:, None] * m.value(x)[0]).sum(0)).squeeze()
    torch.testing.assert_close(m(x).logits[0], 0.5 * (c.max() + bag))
