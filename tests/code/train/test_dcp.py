"""Sharded (torch.distributed.checkpoint) checkpoints: layout, resharding 2 -> 1 and 1 -> 2 processes, and the
offline streaming `final/` export. (kill -9 of every rank mid-step and mid-save: test_pretrain_fsdp.py.)

What is bit-exact and what is only close, and why:
- the weights and AdamW moments right after a load equal the checkpoint's tensors bit for bit, in any
  number of processes (DCP copies bytes; resharding is slicing);
- the data of every step is the same in both worlds (`data.BatchPlan`: the global batch of step s is
  positions [s*G, (s+1)*G) of the stream, G = batch_size x grad_accum x processes, kept equal here by
  doubling batch_size in one process) and so is the learning rate (a function of the step);
- the losses after the switch equal the uninterrupted run's to float rounding only (rel 1e-5): one process
  sums a micro-batch's gradient in one matmul, two processes average two half-batches (reduce-scatter), a
  different summation order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

STEPS, RESUME_AT = 8, 6  # STEPS: conftest.FSDP_STEPS, the length of the shared `fsdp_run`
STRIP = ("tokens_per_s", "elapsed_s")

# 1 -> 2: the FSDP ranks resume from a one-process checkpoint; rank 0 dumps the gathered weights and AdamW
# state right after the load (before any step) for the test to compare with the checkpoint
RESUME_2 = """
import sys, torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
from domainfm.code.train.config import PretrainConfig
from domainfm.code.train.trainer import Trainer

out, data, preset = sys.argv[1:4]  # then STEPS
cfg = PretrainConfig(data=data, out=out, preset=preset, batch_size=2, grad_accum=2, max_steps=int(sys.argv[4]), warmup=1,
                     lr=3e-3, save_every=3, eval_every=4, eval_batches=1, seed=5, tensorboard=False, fsdp=True)
t = Trainer(cfg)
t._setup()
opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
loaded = {"model": get_model_state_dict(t.raw, options=opts),
          "optim": get_optimizer_state_dict(t.raw, t.optimizer, options=opts).get("state"), "step": t.step}
if t.info.is_main:
    torch.save(loaded, out + "/loaded.pt")
t._fit()
dist.destroy_process_group()
"""


def rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in STRIP}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:08d}"


def resumable_copy(src: Path, step: int, dst: Path) -> Path:
    """A fresh OUT holding only checkpoint `step` of `src`: a run continued from there."""
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt(src, step), ckpt(dst, step))
    return dst


def assert_continues(resumed: list[dict], ref: list[dict]) -> None:
    """Steps RESUME_AT+1.. of a resumed run against the uninterrupted run: same lr, same data (val set
    included), losses equal to float rounding."""
    ref = [r for r in ref if r["step"] > RESUME_AT]
    assert [r["step"] for r in resumed] == [r["step"] for r in ref] == list(range(RESUME_AT + 1, STEPS + 1))
    for a, b in zip(resumed, ref, strict=True):
        assert a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
        assert (a.get("val_loss") is None) == (b.get("val_loss") is None)
        if "val_loss" in a:
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def assert_weights_close(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=2e-3, atol=2e-4, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture
def fsdp2(fsdp_run: Path) -> Path:
    """The uninterrupted 2-process FSDP run of conftest.py (sharded checkpoints are the FSDP default)."""
    return fsdp_run


def test_sharded_checkpoint_layout(fsdp2: Path) -> None:
    import torch
    from torch.distributed.checkpoint import FileSystemReader

    assert (fsdp2 / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:08d}"
    assert sorted(p.name for p in (fsdp2 / "checkpoints").iterdir()) == \
        ["latest", f"step_{RESUME_AT:08d}", f"step_{STEPS:08d}"]  # keep_checkpoints 2, no temporaries left
    files = sorted(p.name for p in ckpt(fsdp2, STEPS).iterdir())
    # DCP's layout (torch.distributed.checkpoint.FileSystemWriter): one .distcp per rank + .metadata
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "model_config.json", "trainer.pt"]
    meta = FileSystemReader(str(ckpt(fsdp2, STEPS))).read_metadata().state_dict_metadata
    emb = meta["model.model.embed_tokens.weight"]
    assert len(emb.chunks) == 2  # FSDP2 shards dim 0 over the 2 ranks; each rank wrote its own half
    assert sum(c.sizes[0] for c in emb.chunks) == emb.size[0]
    assert {"optim.state.model.embed_tokens.weight.exp_avg", "optim.state.model.embed_tokens.weight.exp_avg_sq",
            "optim.param_groups.0.lr"} <= meta.keys()
    state = torch.load(ckpt(fsdp2, STEPS) / "trainer.pt", weights_only=False)
    assert "model" not in state and "optimizer" not in state  # no gathered copy anywhere
    assert state["step"] == STEPS and state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["data_position"]["sequences_seen"] == STEPS * 2 * 2 * 2


def test_two_processes_resume_in_one(fsdp2: Path, packed_dir: Path, micro_preset: str, tmp_path: Path) -> None:
    """2 -> 1: a plain (unsharded) process continues a 2-rank FSDP run from its sharded checkpoint."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.dcp_export import read_tensors
    from domainfm.code.train.trainer import Trainer

    out = resumable_copy(fsdp2, RESUME_AT, tmp_path / "one")
    torch.set_num_threads(1)
    t = Trainer(PretrainConfig(data=str(packed_dir), out=str(out), preset=micro_preset, batch_size=4, grad_accum=2,
                               max_steps=STEPS, warmup=1, lr=3e-3, save_every=3, eval_every=4, eval_batches=1,
                               seed=5, tensorboard=False, threads=1))
    t._setup()
    assert t.step == RESUME_AT
    saved = read_tensors(ckpt(fsdp2, RESUME_AT))
    loaded = t.raw.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)  # bit-exact after resharding 2 -> 1
    opt = get_optimizer_state_dict(t.raw, t.optimizer)["state"]
    saved_opt = read_tensors(ckpt(fsdp2, RESUME_AT), key="optim")
    for name, st in opt.items():
        for m in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[m], saved_opt[f"state.{name}.{m}"]), (name, m)
    t._fit()  # (ends with the final/ export)
    assert_continues(rows(out), rows(fsdp2))
    # without --fsdp (and without --sharded-checkpoints) the continued run writes full checkpoints
    final = torch.load(ckpt(out, STEPS) / "state.pt", weights_only=False)["model"]
    assert_weights_close(final, read_tensors(ckpt(fsdp2, STEPS)))


def test_one_process_resumes_in_two(packed_dir: Path, micro_preset: str, tmp_path: Path, torchrun,  # noqa: ANN001
                                    fsdp_args) -> None:  # noqa: ANN001
    """1 -> 2: 2 FSDP ranks continue a one-process run from its sharded checkpoint."""
    import torch

    from domainfm.cli import main
    from domainfm.code.train.dcp_export import read_tensors

    one = tmp_path / "one"
    torch.set_num_threads(1)
    assert main([*fsdp_args(packed_dir, micro_preset, one, 4), "--sharded-checkpoints", "--threads", "1"]) == 0
    assert sorted(p.name for p in ckpt(one, RESUME_AT).iterdir())[:2] == [".metadata", "__0_0.distcp"]

    out = resumable_copy(one, RESUME_AT, tmp_path / "two")
    script = tmp_path / "resume2.py"
    script.write_text(RESUME_2)
    res = torchrun([str(script), str(out), str(packed_dir), micro_preset, str(STEPS)])
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = torch.load(out / "loaded.pt", weights_only=False)
    assert loaded["step"] == RESUME_AT
    saved = read_tensors(ckpt(one, RESUME_AT))
    assert loaded["model"].keys() == saved.keys()
    assert all(torch.equal(loaded["model"][k], saved[k]) for k in saved)  # bit-exact after resharding 1 -> 2
    saved_opt = read_tensors(ckpt(one, RESUME_AT), key="optim")
    for name, st in loaded["optim"].items():
        for m in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[m], saved_opt[f"state.{name}.{m}"]), (name, m)
    assert_continues(rows(out), rows(one))
    assert_weights_close(read_tensors(ckpt(out, STEPS)), read_tensors(ckpt(one, STEPS)))
    assert sorted(p.name for p in ckpt(out, STEPS).iterdir())[1:3] == ["__0_0.distcp", "__1_0.distcp"]


def test_offline_export_streams_shards_that_transformers_loads(fsdp2: Path, tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from domainfm.cli import main
    from domainfm.code.train.dcp_export import read_tensors

    dest = tmp_path / "export"
    assert main(["code", "export-checkpoint", str(ckpt(fsdp2, STEPS)), "-o", str(dest), "--max-shard-mb", "0.2"]) == 0
    # transformers' sharded layout: model-0000i-of-0000N.safetensors + model.safetensors.index.json
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in dest.glob("*.safetensors"))
    assert len(shards) > 1 and shards == sorted(set(index["weight_map"].values()))
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert "lm_head.weight" not in index["weight_map"]  # tied to the embedding: stored once, as save_pretrained
    for name in shards:
        with safe_open(dest / name, "pt") as f:
            assert f.metadata() == {"format": "pt"}
            keys = list(f.keys())
            assert sum(f.get_tensor(k).nbytes for k in keys) <= 0.2 * 2**20 or len(keys) == 1
    # the same folder as the trainer's own final/ (config, generation config, tokenizer, weights)
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (dest / name).read_text() == (fsdp2 / "final" / name).read_text(), name
    assert index["metadata"]["total_size"] == sum(
        t.nbytes for k, t in read_tensors(ckpt(fsdp2, STEPS)).items() if k != "lm_head.weight")
    model = AutoModelForCausalLM.from_pretrained(dest)
    saved = read_tensors(ckpt(fsdp2, STEPS))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    ref = AutoModelForCausalLM.from_pretrained(fsdp2 / "final").state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_export_refuses_a_full_checkpoint(packed_dir: Path, micro_preset: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    out = tmp_path / "full"
    assert main(["code", "pretrain", "--data", str(packed_dir), "--preset", micro_preset, "-o", str(out),
                 "--max-steps", "1", "--threads", "1", "--no-tensorboard", "--eval-batches", "1"]) == 0
    capsys.readouterr()
    assert main(["code", "export-checkpoint", str(out)]) == 2
    assert "not a sharded checkpoint" in capsys.readouterr().err
