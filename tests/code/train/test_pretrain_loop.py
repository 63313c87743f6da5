"""The pretraining loop in-process: schedule, data plan, logs, export, model card, config/flags, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from domainfm.cli import main
from domainfm.code.train.data import BatchPlan
from domainfm.code.train.trainer import lr_factor


def test_lr_schedule_warmup_then_cosine() -> None:
    f = [lr_factor(s, warmup=10, max_steps=100, min_ratio=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:10], f[1:10], strict=False))  # linear warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # monotone decay
    assert f[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: the cosine's midpoint


def test_batch_plan_epochs_and_ranks() -> None:
    plan = BatchPlan(n_seqs=10, batch_size=2, grad_accum=1, seed=3)
    seen = np.concatenate([b for s in range(5) for b in plan.micro_batches(s)])
    assert sorted(seen.tolist()) == list(range(10))  # one epoch = every sequence once
    nxt = np.concatenate([b for s in range(5, 10) for b in plan.micro_batches(s)])
    assert sorted(nxt.tolist()) == list(range(10)) and nxt.tolist() != seen.tolist()  # reshuffled
    # two ranks together read exactly what one process with twice the batch reads, step by step
    single = BatchPlan(37, 4, 1, 1, 0, seed=1)
    ranks = [BatchPlan(37, 2, 1, 2, r, seed=1) for r in range(2)]
    for s in range(12):
        both = np.concatenate([ranks[0].micro_batches(s)[0], ranks[1].micro_batches(s)[0]])
        assert both.tolist() == single.micro_batches(s)[0].tolist()
    assert plan.position(7) == {"sequences_seen": 14, "epoch": 1, "offset_in_epoch": 4}


def _run(packed: Path, out: Path, preset: str, *extra: str) -> int:
    return main(["code", "pretrain", "--data", str(packed), "--preset", preset, "-o", str(out), "--batch-size", "4",
                 "--max-steps", "12", "--warmup", "2", "--lr", "3e-3", "--eval-every", "4", "--eval-batches", "2",
                 "--save-every", "6", "--threads", "1", *extra])


@pytest.fixture(scope="module")
def trained(packed_dir: Path, micro_preset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert _run(packed_dir, out, micro_preset, "--grad-accum", "2") == 0
    return out


def test_run_writes_metrics_checkpoints_plot_and_tensorboard(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all({"step", "loss", "lr", "tokens", "grad_norm", "tokens_per_s"} <= r.keys() for r in rows)
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8, 12]
    assert rows[-1]["tokens"] == 12 * 4 * 2 * 64  # steps x batch x accum x seq_len
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5  # it learns
    assert rows[11]["val_loss"] < rows[3]["val_loss"]
    assert (trained / "loss.png").stat().st_size > 1000
    assert list((trained / "tb").glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (trained / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000006", "step_00000012"]
    assert (trained / "checkpoints" / "latest").read_text().strip() == "step_00000012"
    import torch

    state = torch.load(trained / "checkpoints/step_00000012/state.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "rng", "step", "data_position"} <= state.keys()
    assert state["data_position"]["sequences_seen"] == 12 * 8


def test_final_folder_loads_in_transformers_and_pipeline(trained: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    final = trained / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert type(model).__name__ == "Starcoder2ForCausalLM"
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    # the exported weights are the checkpoint's
    state = torch.load(trained / "checkpoints/step_00000012/state.pt", weights_only=False)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    pipe = pipeline("text-generation", model=str(final), device="cpu")
    text = pipe("def main(", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("def main(") and len(text) > len("def main(")


def test_model_card_states_data_tokens_config_and_losses(trained: Path) -> None:
    card = (trained / "final" / "README.md").read_text()
    summary = json.loads((trained / "final" / "training_summary.json").read_text())
    assert "library_name: transformers" in card and "pipeline_tag: text-generation" in card
    assert f"{summary['tokens_seen']:,}" in card and summary["tokens_seen"] == 12 * 8 * 64
    assert "files_kept" in card  # the curation stats.json, found through the packed index
    assert f"{summary['final_val_loss']:.4f}" in card and f"{summary['final_loss']:.4f}" in card
    assert "grad_accum: 2" in card and "preset: " in card


def test_rerun_of_finished_run_is_a_no_op(packed_dir: Path, micro_preset: str, trained: Path) -> None:
    before = (trained / "metrics.jsonl").read_text()
    assert _run(packed_dir, trained, micro_preset, "--grad-accum", "2") == 0
    assert (trained / "metrics.jsonl").read_text() == before


def test_yaml_config_and_flag_precedence(packed_dir: Path, micro_preset: str, tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {packed_dir}\npreset: tiny\nbatch_size: 2\nmax_steps: 3\nseq_len: 32\n"
                   "eval_every: 0\nsave_every: 0\ntensorboard: false\nthreads: 1\n")
    out = tmp_path / "out"
    assert main(["code", "pretrain", str(cfg), "-o", str(out), "--max-steps", "2", "--preset", micro_preset]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # the flag beat the YAML
    assert rows[-1]["tokens"] == 2 * 2 * 32  # the YAML's batch_size and seq_len
    assert not (out / "tb").exists()
    saved = (out / "config.yaml").read_text()
    assert "max_steps: 2" in saved and "batch_size: 2" in saved


def test_user_errors_are_one_line(packed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "pretrain", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "not a packed dataset" in capsys.readouterr().err
    assert main(["code", "pretrain", "--data", str(packed_dir), "--preset", "nano", "-o", str(tmp_path / "o"),
                 "--max-steps", "1"]) == 2
    assert "known:" in capsys.readouterr().err
    assert main(["code", "pretrain", "--data", str(packed_dir), "--seq-len", "4096", "-o", str(tmp_path / "o")]) == 2
    assert "seq_len" in capsys.readouterr().err
    assert main(["code", "pretrain", "--data", str(packed_dir), "--batch-size", "0", "-o", str(tmp_path / "o")]) == 2
    assert "batch_size" in capsys.readouterr().err
