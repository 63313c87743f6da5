"""The executor contract: registry, options, markers, and a Ray worker killed mid-task."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from domainfm.core.errors import UserError
from domainfm.core.executor import ShardedExecutor, executor_names, get_pool, pool_options
from domainfm.core.io import atomic_write_json


def test_registry_lists_local_and_ray() -> None:
    assert executor_names() == ["local", "ray"]
    with pytest.raises(UserError, match=r"unknown executor 'dask'; known: local, ray"):
        get_pool("dask")


def test_ray_address_needs_the_ray_executor() -> None:
    with pytest.raises(UserError, match="--ray-address needs --executor ray"):
        pool_options("local", "10.0.0.1:6379")
    assert pool_options("ray", "10.0.0.1:6379") == {"address": "10.0.0.1:6379"}
    assert pool_options("ray") == {} and pool_options("local") == {}


def test_pools_start_nothing_in_the_constructor() -> None:
    pool = get_pool("ray", 2, address="127.0.0.1:1")  # an address nobody listens on: not contacted yet
    assert pool.workers == 2 and pool.address == "127.0.0.1:1" and not pool._started
    pool.close()  # nothing started, nothing to stop


def test_cli_unknown_executor_is_one_line(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    rc = main(["code", "curate", str(corpus), "-o", str(tmp_path / "o"), "--executor", "dask"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "known: local, ray" in err


def test_cli_unknown_global_dedup_mode_is_one_line_before_any_work(tmp_path: Path, corpus: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    out = tmp_path / "o"
    rc = main(["code", "curate", str(corpus), "-o", str(out), "--executor", "ray", "--ray-dedup", "spark"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "auto, task, data" in err
    assert not out.exists()  # refused before the plan and stage 1 (and before a Ray instance)


class KillFirstAttempt:
    """Writes a partial output, then SIGKILLs its own worker on the first attempt of each shard."""

    def __init__(self, out: Path, flags: Path | None) -> None:
        self.out, self.flags = out, flags  # flags None: never kill (the reference run)

    def __call__(self, rank: int, world: int) -> dict:
        target = self.out / f"part-{rank:05d}.json"
        flag = self.flags / f"{rank}.attempt" if self.flags else None
        if rank == 1 and flag is not None and not flag.exists():
            flag.write_text(str(os.getpid()))
            target.write_text("partial")  # a torn output, as a real crash leaves it
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write_json(target, {"rank": rank, "world": world, "rows": list(range(rank * 3))})
        return {"rank": rank, "n": rank * 3}


def _outputs(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.json"))}


def _by_value() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/


def test_ray_worker_killed_mid_task_is_retried(tmp_path: Path, ray_address: str) -> None:
    _by_value()
    ref, out = tmp_path / "local", tmp_path / "ray"
    ref.mkdir(), out.mkdir(), (tmp_path / "flags").mkdir()
    local = ShardedExecutor(KillFirstAttempt(ref, None), 4, ref / "logs").run()
    task = KillFirstAttempt(out, tmp_path / "flags")
    res = ShardedExecutor(task, 4, out / "logs", workers=2, executor="ray").run()
    killed = int((tmp_path / "flags" / "1.attempt").read_text())
    assert killed != os.getpid()  # the worker, not this driver, was killed
    assert res == local == [{"rank": r, "n": r * 3} for r in range(4)]
    assert _outputs(out) == _outputs(ref) and len(_outputs(out)) == 4
    assert _outputs(out / "logs" / "completions") == _outputs(ref / "logs" / "completions")
    assert sorted(os.listdir(out / "logs" / "completions")) == [f"{r:05d}.json" for r in range(4)]


def _fails(rank: int, world: int) -> dict:
    raise UserError(f"shard {rank} is bad")


def test_task_error_is_not_retried_and_keeps_its_type(tmp_path: Path, ray_address: str) -> None:
    _by_value()
    with pytest.raises(UserError, match="shard 0 is bad"):
        ShardedExecutor(_fails, 1, tmp_path, executor="ray").run()
    assert not (tmp_path / "completions").exists() or not list((tmp_path / "completions").iterdir())


def _assigned(rank: int, world: int) -> dict:
    import ray

    return {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}


def test_task_memory_is_reserved_on_ray_and_ignored_locally(tmp_path: Path, ray_address: str) -> None:
    """`task_memory` becomes Ray's `memory` resource of each task (a task starts only where that much is
    unreserved: the one-task global dedup names its measured bound); the local pool runs it as before."""
    import ray

    _by_value()
    need = 96 << 20
    with_memory = ShardedExecutor(_assigned, 1, tmp_path / "a", executor="ray", task_memory=need).run()[0]
    without = ShardedExecutor(_assigned, 1, tmp_path / "b", executor="ray").run()[0]
    assert with_memory == {"CPU": 1.0, "memory": float(need)} and without == {"CPU": 1.0}
    too_much = int(ray.cluster_resources()["memory"]) + (1 << 30)  # more than the whole instance has
    assert ShardedExecutor(lambda r, w: {"ran": r}, 1, tmp_path / "c", task_memory=too_much).run() == [{"ran": 0}]
