"""Joining a running cluster that uses Ray's token authentication (Ray >= 2.59 turns it on by itself).

A cluster started where the user has a token (``~/.ray/auth_token``, written by any local ``ray.init``)
requires it, and a driver joining with ``--ray-address`` sent none: the join failed with
``InvalidAuthToken`` (the benchmark's ``--join`` variant and a ``ray start --head`` cluster, session 4).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from scale_helpers import FAST, tree_hashes

from domainfm.scale.ray_pool import _send_auth_token

HOLD = """
import logging, os, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
         _temp_dir=sys.argv[1], object_store_memory=2**27, _system_config={"worker_niceness": 0})
print(os.environ.get("RAY_AUTH_MODE", "unset"), ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # held until the test closes our stdin
ray.shutdown()
"""
CLI = "import sys; from domainfm.cli import main; sys.exit(main(sys.argv[1:]))"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no mode chosen by anyone
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "DOMAINFM_PROGRESS": "0"}


def test_a_token_is_sent_only_when_the_user_has_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _send_auth_token() is False and "RAY_AUTH_MODE" not in os.environ  # no token: nothing to send
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    assert _send_auth_token() is True and os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice stands
    assert _send_auth_token() is False and os.environ["RAY_AUTH_MODE"] == "disabled"


@pytest.mark.slow
def test_curate_joins_a_cluster_that_requires_the_token(tmp_path: Path, corpus: Path, curated_local: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rj_", dir="/tmp"))  # short: Ray's socket paths
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ray_tmp)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(home))
    try:
        mode, address = (holder.stdout.readline().split() + ["", ""])[:2] if holder.stdout else ("", "")
        assert mode == "token" and address  # Ray turned authentication on: the user has a token
        out = tmp_path / "joined"
        args = ["code", "curate", str(corpus), "-o", str(out), "--executor", "ray", "--ray-address", address, *FAST]
        run = subprocess.run([sys.executable, "-c", CLI, *args], env=_env(home), capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        assert tree_hashes(out) == tree_hashes(curated_local)
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait(timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
