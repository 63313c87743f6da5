"""The one-task global dedup dies (its worker killed every time, as an OOM kill would): with
``--ray-dedup auto`` the command goes on with the Ray Data shuffles and gives the local output; with
``--ray-dedup task`` it stops with one line, and the same command resumes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from scale_helpers import FAST, completions, tree_hashes

from domainfm.cli import main
from domainfm.code.curate import pipeline


def _dies(work: str, rank: int = 0, world_size: int = 1) -> dict:
    os.kill(os.getpid(), signal.SIGKILL)  # every attempt: Ray retries it max_retries times, then gives up
    return {}


@pytest.mark.slow
def test_the_one_task_dies_every_time(tmp_path: Path, corpus: Path, curated_local: Path, ray_address: str,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    monkeypatch.setattr(pipeline, "stage2", _dies)
    out = tmp_path / "ray"
    args = ["code", "curate", str(corpus), "-o", str(out), "--executor", "ray", "--workers", "2", *FAST]
    assert main([*args, "--ray-dedup", "task"]) == 1  # no fallback asked for: one line, exit 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("domainfm: error")]
    assert err == ["domainfm: error: s2: the worker of shard 0 died (WorkerCrashedError); run the same command "
                   "again to resume"]
    assert completions(out, "s1") == completions(curated_local, "s1") and not completions(out, "s2")
    assert main([*args, "--ray-dedup", "auto"]) == 0  # resumes after s1; the one task dies again -> shuffles
    assert "running it as Ray Data shuffles" in capsys.readouterr().err
    assert tree_hashes(out) == tree_hashes(curated_local)
    for stage in ("s1", "s2", "s3"):
        assert completions(out, stage) == completions(curated_local, stage)
