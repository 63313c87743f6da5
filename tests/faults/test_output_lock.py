"""Two writers, one output folder: the second is refused with one line and writes nothing; kill -9 frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.core.errors import UserError
from domainfm.core.locks import lock_path, output_lock

HOLD = ("import sys, time\nfrom domainfm.core.locks import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def _holder(out: Path) -> subprocess.Popen:
    """Another process that holds the lock of `out` (as a running stage does)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _commands(tmp: Path, out: Path) -> dict[str, list[str]]:
    """Every long stage's command line writing to `out` (inputs exist but are never read: refused first)."""
    d = tmp / "input"
    d.mkdir(exist_ok=True)
    (d / "labels.csv").write_text("slide_id,patient_id,label\n")
    return {
        "code curate": ["code", "curate", str(d), "-o", str(out)],
        "code pack": ["code", "pack", str(d), "--tokenizer", str(d), "-o", str(out), "--seq-len", "32"],
        "code pretrain": ["code", "pretrain", "--data", str(d), "-o", str(out)],
        "code index": ["code", "index", str(d), "-o", str(out)],
        "pathology tile": ["pathology", "tile", str(d), "-o", str(out)],
        "pathology extract": ["pathology", "extract", "--encoder", "resnet18", "--tiles", str(d), "-o", str(out)],
        "pathology pretrain": ["pathology", "pretrain", str(d), "-o", str(out)],
        "mil train": ["pathology", "mil", "train", "--features", str(d), "--labels", str(d / "labels.csv"),
                      "-o", str(out)],
    }


def test_every_long_stage_refuses_a_folder_another_process_writes(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        for name, args in _commands(tmp_path, out).items():
            assert main(args) == 2, name
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "being written by another process" in err[0], (name, err)
            assert f"pid {holder.pid}" in err[0]
            assert not out.exists(), f"{name} wrote into a folder it does not own"
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # the kernel dropped the dead holder's lock: a rerun may go on
        pass


@pytest.mark.slow
def test_a_real_second_run_is_refused_and_the_first_is_unharmed(tmp_path: Path) -> None:
    """Two real `pathology mil train` processes on one folder; the first, SIGKILLed, then resumes."""
    import stage_inputs as si

    feats, labels = si.mil_cohort(tmp_path / "in")

    def args(o: Path) -> list[str]:
        return [sys.executable, "-m", "domainfm", "pathology", "mil", "train", "--features", str(feats), "--labels",
                str(labels), "--model", "meanpool", "-o", str(o), "--epochs", "4", "--folds", "2", "--inner-folds",
                "0", "--n-boot", "20", "--hidden", "8"]

    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    first = subprocess.Popen(args(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not lock_path(out).exists() or not os.pread(os.open(lock_path(out), os.O_RDONLY), 16, 0):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    second = subprocess.run(args(out), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.strip() == (f"domainfm: error: output folder {out} is being written by another process "
                                     f"(pid {first.pid}); wait for it to finish or choose another folder")
    os.killpg(first.pid, signal.SIGKILL)  # kill -9: the lock goes with the process, the rerun resumes
    first.wait()
    rerun = subprocess.run(args(out), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr  # (equal to an uninterrupted run: test_kill9.py::test_mil_train)
    assert (out / "model.safetensors").is_file()


def test_lock_errors_are_user_errors(tmp_path: Path) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(UserError, match="not a writable folder"):
        with output_lock(f):
            pass


def test_the_next_writer_sweeps_a_killed_runs_temporaries(tmp_path: Path) -> None:
    """`atomic_path` temporaries left by a kill -9 (found by the --long tile run) go; nothing else does."""
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    stale = out / "masks" / ".slide1.png.an2zga5k.tmp"
    stale.write_bytes(b"half a PNG")
    keep = [out / "masks" / "slide0.png", out / ".hidden", out / ".tmp-step_00000004-77", out / "x.tmp"]
    for p in keep:
        p.write_bytes(b"x")
    with output_lock(out):
        assert not stale.exists() and all(p.exists() for p in keep)
