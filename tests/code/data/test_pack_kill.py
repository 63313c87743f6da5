"""A real kill -9 in the middle of `domainfm code pack`, then the same command again: same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from domainfm.code.data.pack import pack_corpus


def _outputs(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.relative_to(d).parts[0] != "_work"}


def test_kill_9_then_rerun_gives_the_same_result(pack_corpus_dir: Path, pack_tokenizer: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    pack_corpus(pack_corpus_dir, pack_tokenizer, ref, seq_len=32, seed=5, val_fraction=0.2, shard_mb=0.005)
    out = tmp_path / "killed"
    args = ["code", "pack", str(pack_corpus_dir), "--tokenizer", str(pack_tokenizer), "-o", str(out),
            "--seq-len", "32", "--seed", "5", "--val-fraction", "0.2", "--shard-mb", "0.005"]
    env = {**os.environ, "DOMAINFM_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "domainfm", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "_work" / "completions" / "00000.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: at least one shard done
    proc.wait()
    assert marker.exists()
    from domainfm.cli import main

    assert main(args) == 0
    assert _outputs(out) == _outputs(ref)
