from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from domainfm.core.executor import LocalExecutor
from domainfm.core.io import atomic_path, atomic_write_json, read_jsonl, write_jsonl


def _task_factory(out: Path):
    def task(rank: int, world: int) -> dict:
        atomic_write_json(out / f"shard{rank}.json", {"rank": rank, "world": world})
        return {"rank": rank}

    return task


def test_executor_runs_and_skips_completed(tmp_path: Path) -> None:
    calls: list[int] = []

    def task(rank: int, world: int) -> dict:
        calls.append(rank)
        return {"rank": rank, "sq": rank * rank}

    ex = LocalExecutor(task, n_tasks=4, logging_dir=tmp_path, workers=1)
    assert [r["sq"] for r in ex.run()] == [0, 1, 4, 9]
    assert calls == [0, 1, 2, 3]
    (tmp_path / "completions" / "00002.json").unlink()
    assert [r["rank"] for r in ex.run()] == [0, 1, 2, 3]
    assert calls == [0, 1, 2, 3, 2]


def _square(rank: int, world: int) -> dict:
    return {"pid": os.getpid(), "rank": rank}


def test_executor_processes(tmp_path: Path) -> None:
    res = LocalExecutor(_square, n_tasks=3, logging_dir=tmp_path, workers=2).run()
    assert [r["rank"] for r in res] == [0, 1, 2]
    assert all(r["pid"] != os.getpid() for r in res)


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_survives_kill(tmp_path: Path) -> None:
    """A process killed while writing never leaves a partial file under the final name."""
    target = tmp_path / "big.bin"
    script = textwrap.dedent(f"""
        import os, signal
        from domainfm.core.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, 'wb') as fh:
                fh.write(b'x' * 1000)
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert not target.exists()


def test_jsonl_roundtrip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    assert write_jsonl(p, [{"a": 1}, {"b": "é"}]) == 2
    assert list(read_jsonl(p)) == [{"a": 1}, {"b": "é"}]
    p.write_text('{"a": 1}\n{oops\n')
    from domainfm.core.errors import UserError

    with pytest.raises(UserError, match="a.jsonl:2"):
        list(read_jsonl(p))
    with pytest.raises(UserError, match="not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
    assert json.loads(json.dumps({"ok": True}))
