"""The long-context stage (`code pretrain-long-context`): StarCoder2's published stage values as data, the new
RoPE theta and context applied to the model, the base weights carried over exactly, kill -9 + rerun equal to
the uninterrupted stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.code.model import model_config
from domainfm.code.train.stage_config import RECIPES, LongContextConfig
from domainfm.code.train.stages import BaseRun, rope_theta, set_rope_theta, stage_model_config
from domainfm.core.errors import UserError

# StarCoder2 (arXiv:2402.19173): base stage 4k context with RoPE theta 1e5 (section 6.1); long-context stage
# "200B tokens ... 16,384 context length with a sliding window of 4,096" (section 6). The released checkpoints
# are the long-context models, so their config.json rope_theta is the stage's theta:
# huggingface.co/bigcode/starcoder2-{3b,7b,15b}/config.json
PUBLISHED = {
    "starcoder2-3b": {"base": (4096, 1e5), "long": (16384, 999999.4420358813, 4096, 200e9)},
    "starcoder2-7b": {"base": (4096, 1e5), "long": (16384, 1000000.0, 4096, 200e9)},
    "starcoder2-15b": {"base": (4096, 1e5), "long": (16384, 100000.0, 4096, 200e9)},
}
BASE_STEPS, STAGE_STEPS, LONG = 4, 12, 256


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipes_hold_the_published_stage_values(name: str) -> None:
    base, long = RECIPES[name]["base"], RECIPES[name]["long_context"]
    assert (base.seq_len, base.rope_theta) == PUBLISHED[name]["base"]
    assert (long.seq_len, long.rope_theta, long.sliding_window, long.tokens) == PUBLISHED[name]["long"]
    # the released config (our preset) is the long-context model
    released = model_config(name)
    assert rope_theta(released) == long.rope_theta
    assert released.max_position_embeddings == long.seq_len and released.sliding_window == long.sliding_window

    # a base model of that size at its base-stage values -> the stage model of the recipe
    b = model_config(name, max_position_embeddings=base.seq_len, sliding_window=None)
    set_rope_theta(b, base.rope_theta)
    cfg = LongContextConfig(init_from="x", data="y", sliding_window=long.sliding_window)
    got = stage_model_config(BaseRun(b, Path("unused"), name), cfg, seq_len=long.seq_len)
    assert rope_theta(got) == long.rope_theta and got.max_position_embeddings == long.seq_len
    assert got.sliding_window == long.sliding_window
    assert rope_theta(b) == base.rope_theta  # the base config is left alone


def test_without_a_recipe_the_theta_must_be_given(micro_preset: str) -> None:
    b = model_config(model_config("tiny"))
    with pytest.raises(UserError, match="--rope-theta"):
        stage_model_config(BaseRun(b, Path("unused"), micro_preset), LongContextConfig(), seq_len=256)
    with pytest.raises(UserError, match="shorter"):
        stage_model_config(BaseRun(b, Path("unused"), "tiny"), LongContextConfig(context=128), seq_len=256)


@pytest.fixture(scope="module")
def base_run(packed_dir: Path, micro_preset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished base stage: the micro StarCoder2 (theta 1e5, like StarCoder2's base) on 64-token rows."""
    from domainfm.code.train import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("base_run") / "base"
    pretrain(PretrainConfig(data=str(packed_dir), preset=micro_preset, out=str(out), batch_size=4,
                            max_steps=BASE_STEPS, warmup=1, lr=2e-3, save_every=0, eval_every=0, eval_batches=1,
                            threads=1, tensorboard=False, device="cpu"))
    return out


@pytest.fixture(scope="module")
def long_packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sources as `packed_dir`, packed at 256 tokens a row (this folder's conftest builder, loaded
    under its own name: several test folders have a module called conftest)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_train_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_packed(tmp_path_factory.mktemp("long_packed"), seq_len=LONG)


def _stage_args(base: Path, data: Path, out: Path) -> list[str]:
    return ["code", "pretrain-long-context", "--init-from", str(base), "--data", str(data), "-o", str(out),
            "--rope-theta", "1000000", "--batch-size", "2", "--max-steps", str(STAGE_STEPS), "--warmup", "2",
            "--lr", "1e-3", "--save-every", "3", "--eval-every", "6", "--eval-batches", "1", "--threads", "1",
            "--no-tensorboard", "--device", "cpu"]


def test_stage_changes_theta_and_context_and_starts_from_the_base_weights(base_run: Path, long_packed: Path,
                                                                          tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from domainfm.code.train.dist import shutdown_distributed
    from domainfm.code.train.stages import LongContextTrainer, prepare

    cfg = LongContextConfig(init_from=str(base_run), data=str(long_packed), out=str(tmp_path / "lc"),
                            rope_theta=1e6, batch_size=2, max_steps=2, threads=1, tensorboard=False, device="cpu")
    tr = LongContextTrainer(cfg, prepare(cfg))
    try:
        tr._setup()
    finally:
        shutdown_distributed()
    base_cfg = AutoConfig.from_pretrained(base_run / "final")
    assert rope_theta(base_cfg) == 1e5 and base_cfg.max_position_embeddings == 4096
    assert rope_theta(tr.mcfg) == 1e6 and tr.mcfg.max_position_embeddings == LONG and tr.seq_len == LONG
    # the rotary embedding the model computes with is the new theta's: inv_freq_i = theta^(-2i/d)
    d = tr.mcfg.hidden_size // tr.mcfg.num_attention_heads
    inv = tr.raw.model.rotary_emb.inv_freq.float()
    assert torch.allclose(inv, 1.0 / (1e6 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)).float())
    # step 0 of the stage holds the base run's final weights, bit for bit
    base_sd = AutoModelForCausalLM.from_pretrained(base_run / "final", dtype=torch.float32).state_dict()
    stage_sd = tr.raw.state_dict()
    assert set(base_sd) == set(stage_sd)
    assert all(torch.equal(base_sd[k], stage_sd[k]) for k in base_sd)


def test_init_from_a_run_its_final_or_its_checkpoint(base_run: Path, micro_preset: str) -> None:
    import torch

    from domainfm.code.train.stages import base_state_dict, find_base

    run = find_base(base_run)  # a run folder: its final/
    assert run.weights == base_run / "final" and run.preset == micro_preset
    ckpt = find_base(base_run / "checkpoints" / f"step_{BASE_STEPS:08d}")  # the base run's last checkpoint
    assert ckpt.preset == micro_preset and rope_theta(ckpt.config) == rope_theta(run.config) == 1e5
    a, b = base_state_dict(run), base_state_dict(ckpt)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # final/ = the last checkpoint
    with pytest.raises(UserError, match="no final/ folder and no checkpoint"):
        find_base(base_run / "checkpoints")


def _losses(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss"), r["lr"]) for r in rows]


def test_stage_kill_9_then_rerun_equals_the_uninterrupted_stage(base_run: Path, long_packed: Path, tmp_path: Path,
                                                               cli_proc, kill_after_checkpoint,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from domainfm.cli import main

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    # uninterrupted, in this process, from a YAML config (the same settings as the flags below)
    args = _stage_args(base_run, long_packed, ref)
    flags = [a for a in args[2:] if a != "--no-tensorboard"]
    keys = {a[2:].replace("-", "_"): v for a, v in zip(flags[::2], flags[1::2], strict=True) if a != "-o"}
    (tmp_path / "stage.yaml").write_text("".join(f"{k}: {v}\n" for k, v in keys.items()) + "tensorboard: false\n")
    assert main(["code", "pretrain-long-context", str(tmp_path / "stage.yaml"), "-o", str(ref)]) == 0
    assert (ref / "config.yaml").is_file() and "rope_theta: 1000000.0" in (ref / "config.yaml").read_text()
    capsys.readouterr()

    kill_after_checkpoint(cli_proc(_stage_args(base_run, long_packed, cut)), cut)
    assert not (cut / "final").exists() and _losses(cut)[-1][0] < STAGE_STEPS

    p = cli_proc(_stage_args(base_run, long_packed, cut))  # the same command again: it resumes
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    assert "resuming from" in err
    assert _losses(cut) == _losses(ref)  # losses, val losses and learning rates, bit for bit
    a, b = load_file(ref / "final" / "model.safetensors"), load_file(cut / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final = AutoConfig.from_pretrained(cut / "final")
    assert rope_theta(final) == 1e6 and final.max_position_embeddings == LONG

    # resuming the stage with another theta would silently change the model: refused, one line
    args = _stage_args(base_run, long_packed, cut)
    args[args.index("--rope-theta") + 1] = "500000"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot resume" in err and "rope_theta" in err and len(err.splitlines()) == 1
    assert main([*_stage_args(base_run, long_packed, tmp_path / "x")[:3], str(tmp_path / "nope"),
                 *_stage_args(base_run, long_packed, tmp_path / "x")[4:]]) == 2
    assert "--init-from" in capsys.readouterr().err
