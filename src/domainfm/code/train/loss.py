"""Causal-LM loss without the full-vocabulary logits: a chunked, fused LM head + cross-entropy.

transformers' `XForCausalLM(input_ids, labels=...)` computes `logits = lm_head(h)` for every token
((B*L, V) fp32: 400 MB for a batch of 8 x 256 tokens at StarCoder2's V = 49152), then
`F.cross_entropy` (log-softmax, written to a second (B*L, V) tensor) and, in backward, a zero-filled
(B*L, V) nll gradient, the log-softmax backward and the two head matmuls that read the logits' gradient.
On a CPU those vocabulary-sized elementwise passes are memory-bound: `benchmarks/profile_train_step.py`
shows them as ~15-25% of a `tiny` step, next to ~30% for the head matmuls themselves.

`linear_cross_entropy` computes the same loss and gradients a chunk of `chunk` tokens at a time
(the idea of Liger-Kernel's FusedLinearCrossEntropy and Apple's Cut Cross-Entropy, which are GPU/Triton
kernels, in plain torch ops): per chunk, logits (chunk, V) -> logsumexp -> softmax in place ->
minus one at the target -> the chunk's gradients of the hidden states and of the head weight (added
into one (V, H) buffer). The gradients are therefore made in the forward pass; backward only scales them
by the incoming gradient. The full (B*L, V) tensors are never made (a chunk's logits: 100 MB at the
default 512 tokens), there are fewer vocabulary-sized passes (no zero-filled nll gradient, no separate
log-softmax output), and the matmul FLOPs are the same three per token as the plain path. Measured
(`benchmarks/bench_train.py`, "components", one thread): 3-7% less CPU time than the plain head +
cross-entropy; smaller chunks lose, the (V, chunk) @ (chunk, H) weight-gradient matmul gets inefficient.

`tests/code/train/test_mfu_loss.py` checks loss and gradients against transformers' own forward +
`F.cross_entropy` (the reference written in the test).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

IGNORE_INDEX = -100  # transformers' / F.cross_entropy's convention for "no target here"


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                ignore_index: int) -> torch.Tensor:
        # h: (N, H) final hidden states; weight: (V, H) LM head; targets: (N,) ids or ignore_index
        n_valid = (targets != ignore_index).sum()
        denom = n_valid.clamp(min=1).to(torch.float32)  # mean over valid targets (F.cross_entropy's "mean")
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        w = weight.to(h.dtype)
        for s in range(0, h.shape[0], chunk):
            hc, tc = h[s:s + chunk], targets[s:s + chunk]  # (c, H), (c,)
            logits = (hc @ w.t()).float()  # (c, V)
            valid = tc != ignore_index
            safe = torch.where(valid, tc, 0)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if not (need_h or need_w):
                continue
            # d loss_i / d logits_i = softmax_i - onehot(target_i), for valid rows only, / n_valid
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g.scatter_add_(1, safe[:, None], -valid[:, None].to(g.dtype))
            g.mul_((valid.to(g.dtype) / denom)[:, None])
            g = g.to(h.dtype)
            if need_h:
                torch.mm(g, w, out=grad_h[s:s + chunk])  # (c, V) @ (V, H)
            if need_w:
                grad_w.addmm_(g.t(), hc.to(grad_w.dtype))  # (V, c) @ (c, H)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / denom

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 512,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`F.cross_entropy(h @ weight.T, targets, ignore_index=...)` (mean over the valid targets), chunked.

    h: (N, H), weight: (V, H), targets: (N,) int64. Returns a 0-dim fp32 loss (NaN-free: 0 when no
    target is valid, where F.cross_entropy gives NaN).
    """
    if h.dim() != 2 or weight.dim() != 2 or targets.shape != h.shape[:1]:
        raise ValueError(f"shapes: h {tuple(h.shape)}, weight {tuple(weight.shape)}, targets {tuple(targets.shape)}")
    return _LinearCrossEntropy.apply(h, weight, targets, max(1, int(chunk)), ignore_index)


def shift_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, L) labels -> (B*L,) next-token targets: position t predicts labels[t+1], the last one nothing
    (exactly transformers' `ForCausalLMLoss` shift: pad with ignore_index, drop the first column)."""
    return torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[:, 1:].reshape(-1)


class ChunkedLMLoss(torch.nn.Module):
    """A causal LM whose `forward(input_ids, labels)` returns `.loss` from the chunked head + cross-entropy.

    Wraps (does not copy) a transformers `*ForCausalLM` with `.base_model` (the decoder, returning
    `last_hidden_state`) and `.lm_head`; its parameters are the model's, so DDP can wrap this module.
    """

    def __init__(self, model: torch.nn.Module, chunk: int = 512) -> None:
        super().__init__()
        self.lm = model
        self.chunk = chunk

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> Any:
        h = self.lm.base_model(input_ids=input_ids, **kwargs).last_hidden_state  # (B, L, H)
        loss = linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm.lm_head.weight, shift_targets(labels),
                                    self.chunk)
        return SimpleNamespace(loss=loss)


def supports_chunked_loss(model: Any) -> bool:
    """The model has a decoder returning `last_hidden_state` and a bias-free linear LM head."""
    head = getattr(model, "lm_head", None)
    return (getattr(model, "base_model", None) is not model and isinstance(head, torch.nn.Linear)
            and head.bias is None)
