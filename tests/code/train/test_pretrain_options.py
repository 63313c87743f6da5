"""`--grad-checkpointing` and `--compile` change speed/memory, not results: a few steps equal eager ones."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from domainfm.code.train.config import PretrainConfig
from domainfm.code.train.trainer import Trainer


def _train(packed: Path, preset: str, out: Path, **kw: Any) -> Trainer:
    import torch

    torch.set_num_threads(1)
    base = dict(data=str(packed), out=str(out), preset=preset, batch_size=2, grad_accum=2, max_steps=4, warmup=1,
                lr=3e-3, save_every=0, eval_every=0, eval_batches=1, tensorboard=False, seed=3, threads=1)
    t = Trainer(PretrainConfig(**{**base, **kw}))
    t._setup()
    t._fit()
    return t


def _rows(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _saved_tensors(model: Any, x: Any) -> int:
    """Number of tensors autograd keeps for the backward pass of one training forward."""
    import torch

    n = 0

    def pack(t: Any) -> Any:
        nonlocal n
        n += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=x, labels=x).loss.backward()
    return n


def test_grad_checkpointing_keeps_fewer_activations_and_the_same_results(packed_dir: Path, micro_preset: str,
                                                                         tmp_path: Path) -> None:
    import torch

    eager = _train(packed_dir, micro_preset, tmp_path / "eager")
    ckpt = _train(packed_dir, micro_preset, tmp_path / "ckpt", grad_checkpointing=True)
    on = [any(getattr(m, "gradient_checkpointing", False) for m in t.raw.modules()) for t in (eager, ckpt)]
    assert on == [False, True]
    a, b = _rows(tmp_path / "eager"), _rows(tmp_path / "ckpt")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-5)
    for (k, pa), (_, pb) in zip(eager.raw.named_parameters(), ckpt.raw.named_parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    # and it is really on: the checkpointed layers keep only their inputs for the backward pass
    x = torch.from_numpy(eager.train_ds[0][:32]).long()[None]
    eager.raw.train()
    ckpt.raw.train()
    assert _saved_tensors(ckpt.raw, x) < _saved_tensors(eager.raw, x) // 2


@pytest.fixture(scope="module")
def one_layer_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The micro config with one decoder layer: the smallest graph inductor has to build C++ for."""
    from domainfm.code.model import model_config

    d = tmp_path_factory.mktemp("one_layer")
    model_config("tiny", num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256).save_pretrained(d)
    return str(d / "config.json")


@pytest.mark.slow
@pytest.mark.parametrize("backend", [os.environ.get("DOMAINFM_TEST_COMPILE_BACKEND", "aot_eager")])
def test_compile_gives_the_eager_losses(backend: str, packed_dir: Path, one_layer_preset: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from torch._dynamo.utils import counters

    kw = dict(grad_accum=1, max_steps=2)
    eager = _train(packed_dir, one_layer_preset, tmp_path / "eager", **kw)
    counters.clear()
    t0 = time.perf_counter()
    # CI runs the aot_eager backend: the same dynamo capture and AOT-autograd graphs, without inductor's
    # C++ build (100-330 s cold on 2 cores). DOMAINFM_TEST_COMPILE_BACKEND=inductor runs the real thing
    # (passes: 25 s with a warm cache).
    comp = _train(packed_dir, one_layer_preset, tmp_path / "compiled", compile=True, compile_backend=backend, **kw)
    with capsys.disabled():
        print(f"\n[compile] 2 steps with torch.compile ({backend}, CPU): {time.perf_counter() - t0:.1f}s")
    assert isinstance(comp.model, torch._dynamo.eval_frame.OptimizedModule)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured the model
    a, b = _rows(tmp_path / "eager"), _rows(tmp_path / "compiled")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-3)
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], rel=1e-4)
    for (k, pa), (_, pb) in zip(eager.raw.named_parameters(), comp.raw.named_parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-3, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
