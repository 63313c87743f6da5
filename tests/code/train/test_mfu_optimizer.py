"""CPU throughput fix: the trainer's AdamW is the fused kernel on CPU, and that changes speed, not results.

The reference is the path used before (torch's default AdamW on CPU: the per-tensor for-loop), run on
the same model, data and schedule: losses, grad norms and final weights must agree to fp32 rounding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domainfm.code.model import build_model
from domainfm.code.train import trainer as trainer_mod
from domainfm.code.train.config import PretrainConfig
from domainfm.code.train.trainer import Trainer


def _train(packed: Path, preset: str, out: Path) -> Trainer:
    import torch

    torch.set_num_threads(1)
    t = Trainer(PretrainConfig(data=str(packed), out=str(out), preset=preset, batch_size=2, max_steps=5, warmup=1,
                               lr=3e-3, save_every=0, eval_every=0, eval_batches=1, tensorboard=False, seed=3,
                               threads=1, device="cpu"))
    t._setup()
    t._fit()
    return t


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cpu_adamw_is_fused_and_equals_the_for_loop_adamw(packed_dir: Path, micro_preset: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    fused = _train(packed_dir, micro_preset, tmp_path / "fused")
    assert fused.optimizer.defaults["fused"] is True

    real = torch.optim.AdamW

    def for_loop_adamw(params: Any, **kw: Any) -> Any:  # the previous CPU path: no fused, no foreach
        kw.pop("fused", None)
        return real(params, foreach=False, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", for_loop_adamw)  # the trainer looks it up at set-up
    ref = _train(packed_dir, micro_preset, tmp_path / "ref")
    assert not ref.optimizer.defaults["fused"] and ref.optimizer.defaults["foreach"] is False

    a, b = _rows(tmp_path / "fused"), _rows(tmp_path / "ref")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b, strict=True):
        assert ra["lr"] == rb["lr"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
    # the weights moved far more than the tolerance (lr 3e-3, 5 steps), and moved alike
    torch.manual_seed(3)
    init = build_model(trainer_mod.model_config_for(micro_preset, fused.vocab), device="cpu")
    assert max((p - q).abs().max().item() for p, q in zip(fused.raw.parameters(), init.parameters(),
                                                          strict=True)) > 1e-3
    # atol 1e-5 = 0.3% of one Adam update (~lr): the k_proj biases have a gradient that is zero in exact
    # arithmetic (a key bias shifts every score of a query alike), so Adam's m / sqrt(v) there normalises
    # rounding noise, which the two kernels round differently
    for (name, p), q in zip(fused.raw.named_parameters(), ref.raw.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
