"""Shared fixtures: real data through DOMAINFM_DATA (CI sets it and fails loudly when it is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data sets. Outside CI a missing DOMAINFM_DATA skips with the reason; in CI it fails."""
    env = os.environ.get("DOMAINFM_DATA")
    if not env or not Path(env).is_dir():
        if os.environ.get("CI"):
            pytest.fail("DOMAINFM_DATA is not set or missing in CI")
        pytest.skip("DOMAINFM_DATA is not set (set it to ../shared/data)")
    return Path(env)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMAINFM_PROGRESS", "0")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(target: list[str], env_extra: dict[str, str] | None = None, timeout: int = 900):
    """`torchrun --nproc-per-node 2` on CPU (gloo) on a free local port; `target` = script + args or -m ..."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *target]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def torchrun():
    """The 2-process CPU launcher shared by the DDP / FSDP tests of both domains."""
    return _torchrun
