"""Kill -9 harness: run a stage, SIGKILL its process group at a seeded random time (or at a named hook), rerun.

The inputs are the small real ones the stages' own tests use (loaded from those tests' helper files, not
copied).
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
SHORT_SEEDS, LONG_SEEDS = 1, 10


def load_helper(rel: str, name: str) -> Any:
    """Import a helper file of another test folder (its fixtures' builders) without copying it."""
    path = TESTS / rel
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the helper's own sibling imports (slides_synth, mil_helpers)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # one thread: float reductions in the same order in every run (the reference too)
    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in [k for k in env if k.endswith("_KILL_AT")]:
        env.pop(k)
    return {**env, **(extra or {})}


def popen(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m domainfm ARGS` in its own session, so that killpg reaches worker processes too."""
    return subprocess.Popen([sys.executable, "-m", "domainfm", *args], env=cli_env(env_extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, str]:
    p = popen(args, env_extra)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def kill_tree(p: subprocess.Popen) -> None:
    with _suppress():
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


@dataclass
class Stage:
    """One long stage: its command line for an output folder, and what of its output must not change."""

    name: str
    args: Callable[[Path], list[str]]
    snapshot: Callable[[Path], Any]
    hooks: tuple[tuple[str, str], ...] = ()  # (env var, point) kill hooks inside checkpoint / shard writes
    ref_out: Path | None = None
    ref_secs: float = 0.0
    kills: list[dict] = field(default_factory=list)

    def reference(self, root: Path) -> Any:
        if self.ref_out is None:
            out = root / f"{self.name.replace(' ', '_')}_ref"
            t0 = time.monotonic()
            rc, log = run_cli(self.args(out))
            assert rc == 0, log
            self.ref_secs, self.ref_out = time.monotonic() - t0, out
        return self.snapshot(self.ref_out)


def kill_at_random(stage: Stage, root: Path, seed: int) -> dict:
    """Start the stage, SIGKILL its process group after a seeded random delay, rerun; the output snapshot.

    The delay is drawn in (0, the reference run's wall time); a run that ends before its kill is retried
    with half the delay, so every accepted point really interrupted the stage.
    """
    rng = random.Random(seed)
    frac = rng.random()
    for attempt in range(8):
        out = root / f"{stage.name.replace(' ', '_')}_s{seed}_{attempt}"
        delay = frac * stage.ref_secs
        p = popen(stage.args(out))
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < delay:
            time.sleep(0.005)
        if p.poll() is None:
            kill_tree(p)
            break
        p.communicate()
        shutil.rmtree(out, ignore_errors=True)
        frac /= 2
    else:
        pytest.fail(f"{stage.name}: the run always ended before its kill (seed {seed})")
    rc, log = run_cli(stage.args(out))  # the same command again: resumes
    assert rc == 0, f"{stage.name}: rerun after kill -9 at {delay:.2f}s failed:\n{log}"
    rec = {"stage": stage.name, "seed": seed, "delay_s": round(delay, 3), "attempts": attempt + 1}
    stage.kills.append(rec)
    return stage.snapshot(out)


def kill_at_hook(stage: Stage, root: Path, var: str, point: str) -> Any:
    out = root / f"{stage.name.replace(' ', '_')}_{point}"
    rc, log = run_cli(stage.args(out), {var: point})
    assert rc == -signal.SIGKILL, f"{stage.name}: hook {var}={point} did not fire:\n{log}"
    rc, log = run_cli(stage.args(out))
    assert rc == 0, log
    stage.kills.append({"stage": stage.name, "hook": point})
    return stage.snapshot(out)


def seeds(long: bool) -> list[int]:
    return list(range(LONG_SEEDS if long else SHORT_SEEDS))
