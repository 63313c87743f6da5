"""FSDP2 over 2 CPU processes (gloo, `torchrun -m domainfm code pretrain --fsdp`).

Checks what a user relies on: the sharded run computes the same losses as one process with the same
global batch, the exported `final/` is an ordinary transformers folder holding the trained weights, and a
run whose processes are all killed with SIGKILL (mid-step, then mid-save) resumes from its sharded (DCP)
checkpoint to the same losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STEPS = 8  # conftest.FSDP_STEPS: the length of the shared `fsdp_run`
# the monkeypatches make every rank SIGKILL itself either when it starts step DIE_AT + 1, or in the save of
# checkpoint DIE_IN_SAVE after all shards and `.metadata` are written, before rank 0 renames the folder into
# place (the commit of a sharded checkpoint, `sharded.save_sharded`)
DYING = """
import os, signal, sys
import torch.distributed.checkpoint as dcp
from domainfm.code.train import sharded
from domainfm.code.train.trainer import Trainer

_step, _save, _barrier, _commit, dying = Trainer._train_step, dcp.save, sharded._barrier, sharded.commit, []

def step(self, batches):
    if self.step == int(os.environ.get("DIE_AT", -1)):
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, batches)

def save(state, *, storage_writer, **kw):
    out = _save(state, storage_writer=storage_writer, **kw)
    if str(storage_writer.path).endswith("step_%08d" % int(os.environ.get("DIE_IN_SAVE", -1))):
        dying.append(True)
    return out

def barrier(info):
    if dying and info.rank != 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return _barrier(info)

def commit(*a, **kw):
    if dying:
        os.kill(os.getpid(), signal.SIGKILL)
    return _commit(*a, **kw)

Trainer._train_step, dcp.save, sharded._barrier, sharded.commit = step, save, barrier, commit
from domainfm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_fsdp_equals_one_process_and_exports_the_trained_weights(fsdp_run: Path, packed_dir: Path,
                                                                  micro_preset: str, tmp_path: Path,
                                                                  fsdp_args) -> None:  # noqa: ANN001
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from domainfm.cli import main
    from domainfm.code.train.dcp_export import read_tensors

    # one process with twice the micro-batch reads the same sequences per step (data.BatchPlan)
    single = tmp_path / "single"
    torch.set_num_threads(1)
    assert main([*fsdp_args(packed_dir, micro_preset, single, batch_size=4), "--threads", "1"]) == 0
    a, b = rows(fsdp_run), rows(single)
    assert [r["step"] for r in a] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5), ra["step"]
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4), ra["step"]  # clipping sees DTensors
        assert ra["lr"] == rb["lr"]
        assert (ra.get("val_loss") is None) == (rb.get("val_loss") is None)
        if ra.get("val_loss") is not None:
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-5)

    # final/ is an ordinary transformers folder: plain class, tied embedding stored once, KV cache on
    final = fsdp_run / "final"
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["architectures"] == ["Starcoder2ForCausalLM"] and cfg["use_cache"] is True
    with safe_open(final / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    assert "FSDP" not in (final / "README.md").read_text().split("## Training")[0]
    model = AutoModelForCausalLM.from_pretrained(final)
    loaded = model.state_dict()
    trained = read_tensors(fsdp_run / f"checkpoints/step_{STEPS:08d}")  # the sharded checkpoint, stitched
    ref = AutoModelForCausalLM.from_pretrained(single / "final").state_dict()
    assert loaded.keys() == trained.keys() == ref.keys()
    for k in trained:
        assert torch.equal(loaded[k], trained[k]), k  # the (streamed) export is the checkpoint, bit for bit
        torch.testing.assert_close(loaded[k], ref[k], rtol=2e-3, atol=2e-4)  # and the single run's, to rounding


def test_fsdp_killed_then_resumed_reproduces_the_uninterrupted_run(fsdp_run: Path, packed_dir: Path,
                                                                   micro_preset: str, tmp_path: Path,
                                                                   torchrun, fsdp_args) -> None:  # noqa: ANN001
    import torch

    from domainfm.code.train.dcp_export import read_tensors

    script = tmp_path / "dying.py"
    script.write_text(DYING)
    out = tmp_path / "cut"
    args = [*fsdp_args(packed_dir, micro_preset, out), "--fsdp"]
    res = torchrun([str(script), *args], env_extra={"DIE_AT": "5"})
    assert res.returncode != 0  # every worker died by SIGKILL during step 6
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5]
    assert not (out / "final").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000003"

    # the same command again resumes from step 3; this time every rank dies inside the save of step 6
    res = torchrun([str(script), *args], env_extra={"DIE_IN_SAVE": "6"})
    assert res.returncode != 0 and "resuming from" in res.stderr
    tmp = out / "checkpoints" / ".tmp-step_00000006"
    # all shards of step 6 are on disk, yet nothing names them a checkpoint: a rerun must ignore them
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= {p.name for p in tmp.iterdir()}
    assert not (out / "checkpoints" / "step_00000006").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000003"

    res = torchrun(["-m", "domainfm", *args])  # and again: resumes from step 3, drops the logged steps 4-6
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stderr and "step_00000003" in res.stderr
    assert not tmp.exists()  # swept by the next save
    strip = ("tokens_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows(out)] == \
           [{k: v for k, v in r.items() if k not in strip} for r in rows(fsdp_run)]
    for key in ("model", "optim"):  # weights and AdamW moments, bit for bit
        a = read_tensors(fsdp_run / f"checkpoints/step_{STEPS:08d}", key=key)
        b = read_tensors(out / f"checkpoints/step_{STEPS:08d}", key=key)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
