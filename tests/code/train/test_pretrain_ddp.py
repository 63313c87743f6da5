"""DDP over 2 CPU processes (gloo, launched by torchrun): replicas stay in sync and match one process."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPT = """
import sys, torch, torch.distributed as dist
from domainfm.code.train.config import PretrainConfig
from domainfm.code.train.trainer import Trainer

out, data, preset = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = PretrainConfig(data=data, out=out, preset=preset, batch_size=2, grad_accum=2, max_steps=6, warmup=1,
                     lr=3e-3, save_every=3, eval_every=3, eval_batches=1, tensorboard=False, seed=5)
t = Trainer(cfg)
t._setup()
rank = t.info.rank
t._fit()
# every process dumps its own replica; the test compares them
torch.save({k: v.detach().clone() for k, v in t.raw.state_dict().items()}, f"{out}/params_rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
"""


def test_two_process_ddp_stays_in_sync_and_equals_one_process(packed_dir: Path, micro_preset: str,
                                                             tmp_path: Path, torchrun) -> None:
    import torch

    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    res = torchrun([str(script), str(out), str(packed_dir), micro_preset])
    assert res.returncode == 0, res.stderr[-3000:]
    p0 = torch.load(out / "params_rank0.pt")
    p1 = torch.load(out / "params_rank1.pt")
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"replicas differ at {k}"
    assert (out / "final" / "model.safetensors").is_file()
    # one process with twice the micro-batch sees the same sequences per step: same weights up to rounding
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import pretrain

    single = tmp_path / "single"
    torch.set_num_threads(1)
    pretrain(PretrainConfig(data=str(packed_dir), out=str(single), preset=micro_preset, batch_size=4, grad_accum=2,
                            max_steps=6, warmup=1, lr=3e-3, save_every=3, eval_every=3, eval_batches=1,
                            tensorboard=False, seed=5))
    ref = torch.load(single / "checkpoints/step_00000006/state.pt", weights_only=False)["model"]
    for k in p0:
        torch.testing.assert_close(p0[k], ref[k], rtol=2e-3, atol=2e-4, msg=lambda m, k=k: f"{k}: {m}")
    ddp_rows = (out / "metrics.jsonl").read_text().splitlines()
    one_rows = (single / "metrics.jsonl").read_text().splitlines()
    import json

    for a, b in zip(ddp_rows, one_rows, strict=True):
        assert json.loads(a)["loss"] == pytest.approx(json.loads(b)["loss"], rel=1e-4)
