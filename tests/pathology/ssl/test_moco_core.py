"""MoCo v2 building blocks against hand-written references: queue, InfoNCE, momentum, split BN, HED."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from domainfm.pathology.ssl.augment import HEDJitter, hed_to_rgb, rgb_to_hed
from domainfm.pathology.ssl.moco import MoCo, SplitBatchNorm2d, convert_split_bn, info_nce
from domainfm.pathology.ssl.train import auto_bn_splits, lr_at


def tiny_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def make_moco(k: int = 10, splits: int = 1, m: float = 0.9) -> MoCo:
    torch.manual_seed(0)
    return MoCo(tiny_backbone(), width=8, dim=4, queue_size=k, momentum=m, temperature=0.2, bn_splits=splits)


def test_queue_is_a_ring_buffer() -> None:
    moco = make_moco(k=10)
    batches = [F.normalize(torch.randn(4, 4), dim=1) for _ in range(3)]
    moco.dequeue_and_enqueue(batches[0])
    assert int(moco.queue_ptr) == 4
    assert torch.equal(moco.queue[:, :4], batches[0].T)
    moco.dequeue_and_enqueue(batches[1])
    assert int(moco.queue_ptr) == 8
    old = moco.queue.clone()
    moco.dequeue_and_enqueue(batches[2])  # wraps: columns 8, 9, 0, 1
    assert int(moco.queue_ptr) == 2
    assert torch.equal(moco.queue[:, [8, 9, 0, 1]], batches[2].T)
    assert torch.equal(moco.queue[:, 2:8], old[:, 2:8])  # the rest untouched


def test_queue_keeps_only_newest_when_batch_exceeds_k() -> None:
    moco = make_moco(k=3)
    keys = F.normalize(torch.randn(5, 4), dim=1)
    moco.dequeue_and_enqueue(keys)
    assert int(moco.queue_ptr) == 0
    assert torch.equal(moco.queue, keys[-3:].T)


def reference_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    """Loop-by-loop InfoNCE: -log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))."""
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / t) for j in range(queue.shape[1]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_info_nce_matches_reference() -> None:
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(5, 13, generator=g, dtype=torch.float64), dim=0)
    got = float(info_nce(q, k, queue, 0.2))
    assert got == pytest.approx(reference_info_nce(q, k, queue, 0.2), rel=1e-10)
    # a perfect positive and orthogonal negatives give a lower loss than a random positive
    assert float(info_nce(q, q, queue, 0.2)) < got


def test_momentum_update_matches_formula() -> None:
    moco = make_moco(m=0.9)
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(1.0)
    before_k = [p.clone() for p in moco.encoder_k.parameters()]
    q = [p.clone() for p in moco.encoder_q.parameters()]
    moco.momentum_update()
    for pk, bk, pq in zip(moco.encoder_k.parameters(), before_k, q, strict=True):
        assert torch.allclose(pk, 0.9 * bk + 0.1 * pq)
    assert all(not p.requires_grad for p in moco.encoder_k.parameters())


def test_split_bn_equals_bn_per_sub_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    split = SplitBatchNorm2d(3, 2)
    split.load_state_dict(bn.state_dict())
    out = split(x)
    ref_a, ref_b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    ref_a.load_state_dict(bn.state_dict())
    ref_b.load_state_dict(bn.state_dict())
    ref = torch.empty_like(x)
    ref[0::2], ref[1::2] = ref_a(x[0::2]), ref_b(x[1::2])  # strided sub-batches
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(split.running_mean, (ref_a.running_mean + ref_b.running_mean) / 2, atol=1e-6)
    split.eval()
    bn.eval()
    bn.load_state_dict(split.state_dict())
    assert torch.allclose(split(x), bn(x), atol=1e-6)


def test_convert_split_bn_keeps_parameters() -> None:
    net = tiny_backbone()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    convert_split_bn(net, 4)
    assert isinstance(net[1], SplitBatchNorm2d)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_shuffled_keys_come_back_in_order() -> None:
    moco = make_moco(splits=2)
    x = torch.randn(8, 3, 9, 9)
    k = moco._keys(x, torch.Generator().manual_seed(0))
    # recompute each key's sub-batch by hand: keys must be back in input order, BN over the shuffled halves
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(8, generator=g)
    ref = F.normalize(moco.encoder_k(x[perm]), dim=1)[torch.argsort(perm)]
    assert torch.allclose(k, ref, atol=1e-6)
    moco.eval()  # with fixed BN statistics the shuffle is invisible
    assert torch.allclose(moco._keys(x, None), F.normalize(moco.encoder_k(x), dim=1), atol=1e-6)


def test_forward_loss_finite_and_enqueues() -> None:
    moco = make_moco(k=16, splits=2)
    loss = moco(torch.randn(8, 3, 9, 9), torch.randn(8, 3, 9, 9), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    assert int(moco.queue_ptr) == 8
    assert torch.allclose(moco.queue.norm(dim=0), torch.ones(16), atol=1e-5)


def test_hed_matches_skimage() -> None:
    skc = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, size=(7, 9, 3))
    rgb[0, 0] = 0  # black and white corners exercise the clamps
    rgb[0, 1] = 1
    ours = rgb_to_hed(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.allclose(ours, skc.rgb2hed(rgb), atol=1e-10)
    hed = np.abs(rng.normal(0, 0.05, size=(7, 9, 3)))
    back = hed_to_rgb(torch.from_numpy(hed).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.allclose(back, skc.hed2rgb(hed), atol=1e-10)


def test_hed_jitter() -> None:
    img = torch.rand(3, 16, 16) * 0.8 + 0.1
    assert torch.equal(HEDJitter(0.0)(img), img)
    torch.manual_seed(0)
    out = HEDJitter(0.05)(img)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert 0 < float((out - img).abs().mean()) < 0.2  # changes colours, but moderately
    # without jitter the deconvolution round-trips (tissue-like colours: no clamped stain)
    tissue = torch.tensor([0.8, 0.5, 0.7]).view(3, 1, 1).expand(3, 4, 4)
    assert torch.allclose(hed_to_rgb(rgb_to_hed(tissue.double())).float(), tissue, atol=1e-5)


def test_auto_bn_splits_and_schedule() -> None:
    assert auto_bn_splits(64, 0) == 2  # sub-batches of 32, like upstream's 32 images per GPU
    assert auto_bn_splits(256, 0) == 8
    assert auto_bn_splits(8, 0) == 1
    assert auto_bn_splits(32, 0) == 2
    assert auto_bn_splits(48, 3) == 3
    assert lr_at(0, 100, 0.03, 0) == pytest.approx(0.03)
    assert lr_at(50, 100, 0.03, 0) == pytest.approx(0.015)
    assert lr_at(100, 100, 0.03, 0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, 100, 0.03, 10) == pytest.approx(0.003)


@pytest.mark.parametrize("splits", [2, 4])
def test_split_bn_channels_last(splits: int) -> None:
    """The one-GPU path makes the model channels_last; split BN must accept it (it crashed on `.view`)."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 6, 5)
    split = SplitBatchNorm2d(3, splits)
    ref = SplitBatchNorm2d(3, splits)
    ref.load_state_dict(split.state_dict())
    out = split(x.contiguous(memory_format=torch.channels_last))
    expect = ref(x)
    assert out.is_contiguous(memory_format=torch.channels_last)  # the layout is kept for the next conv
    assert torch.allclose(out, expect, atol=1e-6)
    assert torch.allclose(split.running_var, ref.running_var, atol=1e-6)
    # a whole MoCo step on a channels_last model with 2+ splits (the default GPU configuration on CPU)
    moco = make_moco(k=16, splits=splits).to(memory_format=torch.channels_last)
    xq = torch.randn(8, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    loss = moco(xq, xq.clone(), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
