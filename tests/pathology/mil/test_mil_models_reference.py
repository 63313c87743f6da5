"""Each aggregator against a hand-written reference (explicit weight algebra, not the model's own
sub-modules), and the published hyper-parameters pinned as data.

Sources of the pinned values: Courtiol et al. 2018 (arXiv:1802.02212) for Chowder; owkin/HistoSSLscaling
`conf/slide_level_task/cross_validation/model/chowder.yaml` for its Chowder; binli123/dsmil-wsi
(`dsmil.py`, `train_tcga.py`) for DSMIL; szc19990412/TransMIL `models/TransMIL.py` for TransMIL;
mahmoodlab/CLAM `models/model_clam.py` + `utils/core_utils.py` for CLAM-SB.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domainfm.pathology.mil.models import build_mil_model

D = 8

# ---- published hyper-parameters, as data --------------------------------------------------------
CHOWDER_PAPER = {"n_top": 5, "n_bottom": 5, "l2": 0.5, "mlp_hidden": [200, 100], "activation": "Sigmoid",
                 "n_ensemble": 50, "dropout": 0.5, "tiles_mlp_hidden": []}
CHOWDER_HISTOSSL = {"n_top": 10, "n_bottom": 10, "tiles_mlp_hidden": [128], "mlp_hidden": [128, 64],
                    "activation": "Sigmoid", "bias": True, "n_ensemble": 1, "l2": 0.0}
DSMIL = {"q_width": 128, "max_weight": 0.5, "bag_weight": 0.5, "passing_v": False}
TRANSMIL = {"dim": 512, "heads": 8, "dim_head": 512 // 8, "landmarks": 512 // 2, "pinv_iterations": 6,
            "residual": True, "attn_dropout": 0.1, "ppeg_kernels": [7, 5, 3]}
CLAM_SB = {"size": [512, 256], "k_sample": 8, "bag_weight": 0.7, "inst_loss": "ce", "n_instance_classifiers": 2,
           "dropout_default": 0.0}


def _linear(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    return x @ lin.weight.T + lin.bias


def _member(lin: torch.nn.Module, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    return lin.weight[e], lin.bias[e]  # one member's (out, in) weight and (out,) bias


def _chowder_member_reference(m: torch.nn.Module, e: int, x: torch.Tensor) -> tuple:
    """Ensemble member e on one unpadded bag (N, D), by hand: linear score, sort, MLP with sigmoids."""
    w, b = _member(m.score, e)
    s = (x @ w.T + b).squeeze(-1)  # (N,)
    srt = torch.sort(s, descending=True).values
    z = torch.cat([srt[:m.n_extreme], torch.flip(srt, [0])[:m.n_bottom]])
    lins = [mod for mod in m.mlp if hasattr(mod, "weight")]
    for lin in lins[:-1]:
        w, b = _member(lin, e)
        z = torch.sigmoid(z @ w.T + b)
    w, b = _member(lins[-1], e)
    return (z @ w.T + b).squeeze(-1), s


def test_chowder_published_defaults() -> None:
    def describe(m: torch.nn.Module) -> dict:
        lins = [mod for mod in m.mlp if hasattr(mod, "weight")]
        tiles = [mod for mod in m.score_hidden if hasattr(mod, "weight")]
        return {"n_top": m.n_extreme, "n_bottom": m.n_bottom, "l2": m.l2,
                "mlp_hidden": [lin.weight.shape[1] for lin in lins[:-1]],
                "activation": type(m.mlp[1]).__name__, "n_ensemble": m.score.weight.shape[0],
                "dropout": m.mlp[2].p, "tiles_mlp_hidden": [t.weight.shape[1] for t in tiles],
                "mlp_in": lins[0].weight.shape[2], "bias": m.score.bias is not None}

    paper = describe(build_mil_model("chowder-paper", D))
    assert {k: paper[k] for k in CHOWDER_PAPER} == CHOWDER_PAPER and paper["mlp_in"] == 10
    # the tile scorer is the 1x1 convolution: one linear map D -> 1 per member, nothing before it
    assert tuple(build_mil_model("chowder-paper", D).score.weight.shape) == (50, 1, D)
    default = describe(build_mil_model("chowder", D))
    assert {k: default[k] for k in ("n_top", "l2", "mlp_hidden", "n_ensemble")} == {
        "n_top": 5, "l2": 0.5, "mlp_hidden": [200, 100], "n_ensemble": 10}
    h = build_mil_model("chowder-histossl", D)
    got = describe(h)
    assert {k: got[k] for k in CHOWDER_HISTOSSL} == CHOWDER_HISTOSSL and got["mlp_in"] == 20
    assert type(h.score_hidden[1]).__name__ == "Sigmoid"
    assert all(float(mod.bias.detach().abs().sum()) == 0 for mod in h.modules() if hasattr(mod, "bias")
               and isinstance(mod.bias, torch.Tensor))


def test_chowder_ensemble_min_max_against_reference() -> None:
    torch.manual_seed(0)
    m = build_mil_model("chowder", D, n_extreme=2, n_ensemble=3).eval()
    x = torch.randn(1, 6, D)
    out = m(x)
    refs = [_chowder_member_reference(m, e, x[0]) for e in range(3)]
    p = torch.stack([torch.sigmoid(z) for z, _ in refs]).mean()  # the ensemble averages the predictions
    torch.testing.assert_close(torch.sigmoid(out.logits[0]), p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.tile_scores[0], torch.stack([s for _, s in refs]).mean(0))
    # members are independent networks: different initial weights
    assert not torch.equal(m.score.weight[0], m.score.weight[1])


def test_chowder_short_bag_repeats_last_extreme() -> None:
    torch.manual_seed(1)
    m = build_mil_model("chowder", D, n_extreme=4, n_ensemble=1).eval()
    x = torch.randn(1, 2, D)
    w, b = _member(m.score, 0)
    s = (x[0] @ w.T + b).squeeze(-1)
    hi, lo = s.max(), s.min()
    z = torch.stack([hi, lo, lo, lo, lo, hi, hi, hi])
    lins = [mod for mod in m.mlp if hasattr(mod, "weight")]
    for lin in lins[:-1]:
        w, b = _member(lin, 0)
        z = torch.sigmoid(z @ w.T + b)
    w, b = _member(lins[-1], 0)
    torch.testing.assert_close(m(x).logits[0], (z @ w.T + b).squeeze(-1), rtol=1e-5, atol=1e-5)


def test_chowder_l2_is_on_the_tile_scorer_only() -> None:
    torch.manual_seed(2)
    m = build_mil_model("chowder", D, n_ensemble=2).train()
    x, y = torch.randn(3, 9, D), torch.tensor([0.0, 1.0, 1.0])
    out = m(x)
    bce = sum(F.binary_cross_entropy_with_logits(z, y) for z in out.aux["member_logits"])
    penalty = 0.5 * sum(float((m.score.weight[e].detach() ** 2).sum()) for e in range(2))  # weights, not biases
    torch.testing.assert_close(m.loss(out, y), bce + penalty)
    # the penalty's gradient reaches the scorer's weights and nothing else
    m.zero_grad()
    (m.loss(out, y) - bce).backward()
    for name, p in m.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if name == "score.weight":
            torch.testing.assert_close(g, 2 * 0.5 * p.detach())
        else:
            assert float(g.abs().sum()) == 0, name


def test_abmil_gated_attention() -> None:
    m = build_mil_model("abmil", D, hidden=6, attn_dim=3).eval()
    x = torch.randn(1, 5, D)
    h = torch.relu(_linear(x[0], m.project[0]))
    a = _linear(torch.tanh(_linear(h, m.attn_v)) * torch.sigmoid(_linear(h, m.attn_u)), m.attn_w).squeeze(-1)
    a = torch.softmax(a, 0)
    out = m(x)
    torch.testing.assert_close(out.tile_scores[0], a)
    z = (a[:, None] * h).sum(0)
    torch.testing.assert_close(out.logits[0], _linear(torch.relu(_linear(z, m.head[0])), m.head[3]).squeeze(-1))


def test_meanpool_maxpool() -> None:
    for name, pool in (("meanpool", lambda x: x.mean(0)), ("maxpool", lambda x: x.max(0).values)):
        m = build_mil_model(name, D, hidden=5).eval()
        x = torch.randn(1, 6, D)
        z = pool(x[0])
        torch.testing.assert_close(m(x).logits[0], _linear(torch.relu(_linear(z, m.head[0])), m.head[3]).squeeze(-1))


def test_dsmil_published_loss_and_score() -> None:
    torch.manual_seed(3)
    m = build_mil_model("dsmil", D).eval()
    assert m.query[0].out_features == DSMIL["q_width"] and isinstance(m.value, torch.nn.Identity)
    x = torch.randn(2, 5, D)
    y = torch.tensor([1.0, 0.0])
    out = m(x)
    max_l, bag_l = [], []
    for b in range(2):
        c = _linear(x[b], m.instance).squeeze(-1)
        crit = int(c.argmax())
        q = m.query(x[b])  # (N, 128)
        a = torch.softmax(q @ q[crit] / math.sqrt(128), 0)
        bag = _linear((a[:, None] * x[b]).sum(0), m.bag).squeeze(-1)  # values = features (passing_v=False)
        max_l.append(c.max())
        bag_l.append(bag)
    max_l, bag_l = torch.stack(max_l), torch.stack(bag_l)
    # dsmil-wsi train_tcga.py: loss = 0.5 * bag_loss + 0.5 * max_loss; test score 0.5 sig(max) + 0.5 sig(bag)
    ref_loss = (DSMIL["bag_weight"] * F.binary_cross_entropy_with_logits(bag_l, y)
                + DSMIL["max_weight"] * F.binary_cross_entropy_with_logits(max_l, y))
    torch.testing.assert_close(m.loss(out, y), ref_loss)
    torch.testing.assert_close(torch.sigmoid(out.logits), 0.5 * torch.sigmoid(max_l) + 0.5 * torch.sigmoid(bag_l))
    # not BCE of the mean logit (what the model was trained with before)
    old = F.binary_cross_entropy_with_logits(0.5 * (max_l + bag_l), y)
    assert abs(float(m.loss(out, y).detach()) - float(old.detach())) > 1e-4


def test_transmil_published_architecture() -> None:
    m = build_mil_model("transmil", D)
    attn = m.layer1.attn
    got = {"dim": m.hidden, "heads": attn.heads, "dim_head": int(round(attn.scale ** -2)),
           "landmarks": attn.num_landmarks, "pinv_iterations": attn.pinv_iterations, "residual": attn.residual,
           "attn_dropout": attn.to_out[1].p,
           "ppeg_kernels": [c.kernel_size[0] for c in (m.ppeg.proj7, m.ppeg.proj5, m.ppeg.proj3)]}
    assert got == TRANSMIL
    assert all(c.groups == 512 for c in (m.ppeg.proj7, m.ppeg.proj5, m.ppeg.proj3))  # depthwise
    assert tuple(m.cls_token.shape) == (1, 1, 512)


def test_transmil_squares_the_sequence_and_reads_the_class_token() -> None:
    torch.manual_seed(4)
    m = build_mil_model("transmil", D, hidden=16).eval()
    x = torch.randn(1, 5, D)  # 5 tiles -> a 3 x 3 grid: the first 4 tiles are repeated
    h = torch.relu(_linear(x[0], m.fc1[0]))
    h = torch.cat([h, h[:4]])[None]
    h = torch.cat([m.cls_token, h], 1)  # (1, 10, 16)
    h = h + m.layer1.attn(m.layer1.norm(h))
    cls, grid = h[:, :1], h[:, 1:].transpose(1, 2).reshape(1, 16, 3, 3)
    conv = sum(F.conv2d(grid, c.weight, c.bias, padding=c.kernel_size[0] // 2, groups=16)
               for c in (m.ppeg.proj7, m.ppeg.proj5, m.ppeg.proj3))
    h = torch.cat([cls, (grid + conv).flatten(2).transpose(1, 2)], 1)
    h = h + m.layer2.attn(m.layer2.norm(h))
    z = F.layer_norm(h[:, 0], (16,), m.norm.weight, m.norm.bias)
    torch.testing.assert_close(m(x).logits, _linear(z, m.head).squeeze(-1), rtol=1e-5, atol=1e-5)


def test_nystrom_attention_is_exact_softmax_attention_with_n_landmarks() -> None:
    """Nystromformer with as many landmarks as tokens reproduces softmax attention (Xiong et al. 2021)."""
    from nystrom_attention import NystromAttention

    torch.manual_seed(5)
    n, dim, heads = 8, 16, 2
    att = NystromAttention(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=n, pinv_iterations=30,
                           residual=False).eval()
    x = torch.randn(1, n, dim).double()
    att = att.double()
    q, k, v = _linear_nobias(x, att.to_qkv).chunk(3, dim=-1)
    split = lambda t: t.reshape(1, n, heads, dim // heads).transpose(1, 2)  # noqa: E731  (1, h, n, d)
    q, k, v = split(q), split(k), split(v)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
    ref = (a @ v).transpose(1, 2).reshape(1, n, dim)
    ref = _linear(ref, att.to_out[0])
    torch.testing.assert_close(att(x), ref, rtol=1e-6, atol=1e-6)


def _linear_nobias(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    return x @ lin.weight.T


def test_clam_sb_published_defaults_and_loss() -> None:
    torch.manual_seed(6)
    m = build_mil_model("clam-sb", D)
    got = {"size": [m.fc[0].out_features, m.attention_a[0].out_features], "k_sample": m.k_sample,
           "bag_weight": m.bag_weight, "inst_loss": m.inst_loss, "n_instance_classifiers": len(m.instance_classifiers),
           "dropout_default": m.fc[2].p}
    assert got == CLAM_SB
    assert all(c.out_features == 2 for c in m.instance_classifiers)
    m.eval()
    x, y = torch.randn(2, 20, D), torch.tensor([1.0, 0.0])
    out = m(x)
    total_inst = []
    for b in range(2):
        h = torch.relu(_linear(x[b], m.fc[0]))
        a = _linear(torch.tanh(_linear(h, m.attention_a[0])) * torch.sigmoid(_linear(h, m.attention_b[0])),
                    m.attention_c).squeeze(-1)
        a = torch.softmax(a, 0)
        torch.testing.assert_close(out.tile_scores[b], a)
        torch.testing.assert_close(out.logits[b], _linear((a[:, None] * h).sum(0), m.classifier).squeeze(-1))
        order = torch.argsort(a, descending=True)
        inst = torch.cat([h[order[:8]], h[order.flip(0)[:8]]])  # top-8 "in class", bottom-8 "out of class"
        target = torch.tensor([1] * 8 + [0] * 8)
        total_inst.append(F.cross_entropy(_linear(inst, m.instance_classifiers[int(y[b])]), target))
    ref = 0.7 * F.binary_cross_entropy_with_logits(out.logits, y) + 0.3 * torch.stack(total_inst).mean()
    torch.testing.assert_close(m.loss(out, y), ref)


@pytest.mark.parametrize("alpha,tau", [(1.0, 1.0), (0.5, 2.0)])
def test_smooth_top1_svm_formula(alpha: float, tau: float) -> None:
    from domainfm.pathology.mil.models.clam import smooth_top1_svm

    torch.manual_seed(7)
    s, t = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    ref = []
    for i in range(5):
        terms = [math.exp((alpha * (j != int(t[i])) + float(s[i, j] - s[i, t[i]])) / tau) for j in range(2)]
        ref.append(tau * math.log(sum(terms)))
    assert float(smooth_top1_svm(s, t, alpha, tau)) == pytest.approx(sum(ref) / 5, rel=1e-6)
