"""The chunked LM head + cross-entropy (`domainfm.code.train.loss`) equals the plain path.

Reference, written here: transformers' own `Starcoder2ForCausalLM(input_ids, labels=...)` loss, and
by hand `F.cross_entropy(lm_head(h)[:, :-1], labels[:, 1:], ignore_index=-100)` (the mean over the
valid next-token targets) — loss and every parameter's gradient (the tied embedding / head included).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from domainfm.code.model import build_model
from domainfm.code.train.loss import ChunkedLMLoss, linear_cross_entropy, supports_chunked_loss


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny", vocab_size=1000, device="cpu", num_hidden_layers=2, hidden_size=64,
                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [7, 64, 4096])  # not dividing B*L, several chunks, one chunk
def test_chunked_loss_and_grads_equal_transformers_and_f_cross_entropy(chunk: int) -> None:
    torch.set_num_threads(1)
    model = _model()
    x = torch.randint(0, 1000, (3, 40))
    labels = x.masked_fill(x < 50, -100)  # ~5% ignored targets, as the packing pad would be
    assert (labels == -100).any()

    hf = model(input_ids=x, labels=labels).loss
    hf.backward()
    g_hf = _grads(model)
    model.zero_grad(set_to_none=True)

    logits = model(input_ids=x).logits  # (B, L, V)
    by_hand = F.cross_entropy(logits[:, :-1].reshape(-1, 1000), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(hf, by_hand)
    model.zero_grad(set_to_none=True)

    assert supports_chunked_loss(model)
    ours = ChunkedLMLoss(model, chunk=chunk)(input_ids=x, labels=labels).loss
    ours.backward()
    torch.testing.assert_close(ours, hf, rtol=1e-6, atol=1e-6)
    g = _grads(model)
    assert g.keys() == g_hf.keys()
    for name in g:
        torch.testing.assert_close(g[name], g_hf[name], rtol=1e-4, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied: one gradient, both uses


def test_linear_cross_entropy_scales_by_the_incoming_gradient_and_handles_no_valid_target() -> None:
    torch.manual_seed(1)
    h = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(30, 8, requires_grad=True)
    t = torch.randint(0, 30, (10,))
    (3.0 * linear_cross_entropy(h, w, t, chunk=4)).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (3.0 * F.cross_entropy(h2 @ w2.t(), t)).backward()
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(w.grad, w2.grad)

    none = torch.full((10,), -100)
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, none)
    loss.backward()
    assert loss.item() == 0.0 and not h.grad.any() and not w.grad.any()  # F.cross_entropy would give NaN
    with pytest.raises(ValueError, match="shapes"):
        linear_cross_entropy(h, w, t[:5])


def test_pretrain_with_chunked_loss_equals_the_default_loss(packed_dir, micro_preset, tmp_path) -> None:  # noqa: ANN001
    """`--chunked-loss` end to end: same losses, grad norms, val loss and weights as the default path."""
    import json

    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import Trainer
    from domainfm.core.errors import UserError

    def run(out, **kw):  # noqa: ANN001, ANN202
        t = Trainer(PretrainConfig(data=str(packed_dir), out=str(out), preset=micro_preset, batch_size=2,
                                   grad_accum=2, max_steps=3, warmup=1, lr=3e-3, save_every=0, eval_every=0,
                                   eval_batches=1, tensorboard=False, seed=3, threads=1, device="cpu", **kw))
        t._setup()
        t._fit()
        return t, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    plain, a = run(tmp_path / "plain")
    chunked, b = run(tmp_path / "chunked", chunked_loss=True)
    assert isinstance(chunked.model, ChunkedLMLoss) and not isinstance(plain.model, ChunkedLMLoss)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
    assert a[-1]["val_loss"] == pytest.approx(b[-1]["val_loss"], rel=1e-5)
    for p, q in zip(plain.raw.parameters(), chunked.raw.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)  # atol: see test_mfu_optimizer.py
    with pytest.raises(UserError, match="chunked-loss"):
        Trainer(PretrainConfig(data=str(packed_dir), out=str(tmp_path / "c"), preset=micro_preset,
                               chunked_loss=True, compile=True, device="cpu"))._setup()
