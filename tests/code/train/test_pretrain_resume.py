"""kill -9 in the middle of a run, rerun the same command: the loss sequence equals an uninterrupted run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _args(packed: Path, out: Path, preset: str) -> list[str]:
    return ["code", "pretrain", "--data", str(packed), "--preset", preset, "-o", str(out), "--batch-size", "4",
            "--grad-accum", "2", "--max-steps", "60", "--warmup", "4", "--lr", "2e-3", "--save-every", "5",
            "--eval-every", "10", "--eval-batches", "1", "--threads", "1", "--no-tensorboard"]


def _losses(out: Path) -> list[tuple[int, float, float | None, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("val_loss"), r["lr"]) for r in rows]


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(packed_dir: Path, micro_preset: str, tmp_path: Path,
                                                             cli_proc, kill_after_checkpoint) -> None:  # noqa: ANN001
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    p = cli_proc(_args(packed_dir, ref, micro_preset))
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err

    # the same run, killed with SIGKILL right after its first checkpoint
    kill_after_checkpoint(cli_proc(_args(packed_dir, cut, micro_preset)), cut)
    killed_at = [s for s, *_ in _losses(cut)]
    assert killed_at and killed_at[-1] < 60, "the run was not interrupted before its end"
    assert not (cut / "final").exists()

    p = cli_proc(_args(packed_dir, cut, micro_preset))  # rerun the same command: it resumes
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    assert "resuming from" in err

    assert _losses(cut) == _losses(ref)  # bit-identical losses, val losses and learning rates
    assert [s for s, *_ in _losses(cut)] == list(range(1, 61))
    import torch

    a = torch.load(ref / "checkpoints/step_00000060/state.pt", weights_only=False)["model"]
    b = torch.load(cut / "checkpoints/step_00000060/state.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_different_settings_is_refused(packed_dir: Path, micro_preset: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    out = tmp_path / "o"
    base = ["code", "pretrain", "--data", str(packed_dir), "--preset", micro_preset, "-o", str(out), "--max-steps", "2", "--save-every", "1",
            "--threads", "1", "--no-tensorboard"]
    assert main([*base, "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main([*base, "--batch-size", "3"]) == 2  # would silently change the data order
    err = capsys.readouterr().err
    assert "cannot resume" in err and "batch_size" in err
    assert main([*base, "--batch-size", "2", "--no-resume"]) == 2  # refuses to overwrite a run
    assert "already holds checkpoints" in capsys.readouterr().err
