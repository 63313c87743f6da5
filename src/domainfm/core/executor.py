"""Executors: where independent work units run (the datatrove PipelineExecutor contract).

Two layers, both backend-independent:

* **Pools** (`WorkerPool`, registry `EXECUTORS`): `map_unordered(fn, calls)` runs ``fn(*args)`` for every
  argument tuple on some workers and yields ``(index, Outcome)`` as calls finish. ``local`` runs in this
  process (one worker) or in spawned processes; ``ray`` (``domainfm.scale``, loaded on first use, so that
  importing this module never imports ray) runs each call as a Ray task on a local instance or a cluster.
  Commands whose work units keep their own markers (tile: ``status/<id>.json``, extract: ``<id>.h5``,
  index: ``shards/<id>/shard.json``) map over their pending units with a pool.
* **Sharded jobs** (`ShardedExecutor`, alias `LocalExecutor`): `n_tasks` shards; ``task(rank, world_size)``
  processes shard `rank`, writes its outputs atomically and returns a JSON-able summary. The driver then
  writes ``<logging_dir>/completions/<rank>.json`` atomically. A rerun skips every shard whose marker
  exists, so a run killed at any moment (kill -9 of the driver or of a worker) resumes where it stopped
  and ends with the same result as an uninterrupted run, whichever pool ran it: the shard split, the file
  names and the markers do not depend on the executor or the number of workers.

Pools start lazily (no process and no I/O in a constructor) and stop only what they started.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError, WorkerLost
from domainfm.core.io import atomic_write_json
from domainfm.core.progress import get_logger, progress
from domainfm.core.registry import Registry

Task = Callable[[int, int], dict[str, Any]]
log = get_logger("executor")

EXECUTORS: Registry[type[WorkerPool]] = Registry("executor")
# executors that live outside core (their module registers them on import); loaded on first `get_pool`
_PLUGINS = {"ray": "domainfm.scale.ray_pool"}


@dataclass
class Outcome:
    """The result of one call: `value`, or `error` when it raised; `crashed` when its worker died."""

    value: Any = None
    error: BaseException | None = None
    crashed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class WorkerPool:
    """The executor contract. Subclasses implement `_map` and, if they start anything, `close`."""

    name = "pool"

    def __init__(self, workers: int = 1, **options: Any) -> None:
        self.workers = max(1, int(workers))
        self.options = options

    def map_unordered(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]],
                      memory: int = 0) -> Iterator[tuple[int, Outcome]]:
        """Yield ``(i, Outcome)`` for ``fn(*calls[i])``, in completion order. `fn` and the arguments must
        be picklable (a module-level function or a callable object holding paths and settings).
        `memory`: bytes one call needs (0 = unknown); a scheduler that reserves memory (Ray) starts a call
        only where that much is free, a pool of this machine's processes ignores it."""
        if not calls:
            return iter(())
        return self._map(fn, list(calls), memory)

    def _map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], memory: int = 0
             ) -> Iterator[tuple[int, Outcome]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what this pool started (a pool never stops a cluster it joined)."""

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@EXECUTORS.register("local", help="this machine: in-process (1 worker) or spawned worker processes")
class LocalPool(WorkerPool):
    """In this process when `workers` <= 1 or there is one call, else a spawn ProcessPoolExecutor."""

    name = "local"

    def __init__(self, workers: int = 1, start_method: str = "spawn", **options: Any) -> None:
        super().__init__(workers, **options)
        self.start_method = start_method

    def _map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], memory: int = 0
             ) -> Iterator[tuple[int, Outcome]]:
        if self.workers <= 1 or len(calls) <= 1:
            for i, args in enumerate(calls):
                try:
                    value = fn(*args)
                except Exception as exc:  # noqa: BLE001 - handed to the caller in the Outcome
                    yield i, Outcome(error=exc)
                else:
                    yield i, Outcome(value=value)
            return
        ctx = mp.get_context(self.start_method)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(calls)), mp_context=ctx)
        try:
            futs = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
            for fut in as_completed(futs):
                try:
                    value = fut.result()
                except BrokenProcessPool as exc:  # a worker died (SIGKILL, OOM, segfault in a C library)
                    yield futs[fut], Outcome(error=exc, crashed=True)
                except Exception as exc:  # noqa: BLE001
                    yield futs[fut], Outcome(error=exc)
                else:
                    yield futs[fut], Outcome(value=value)
        finally:  # also when the caller stops early (it raised): queued calls are cancelled, not run
            pool.shutdown(wait=True, cancel_futures=True)


def executor_names() -> list[str]:
    return sorted(set(EXECUTORS.names()) | set(_PLUGINS))


def get_pool(name: str = "local", workers: int = 1, **options: Any) -> WorkerPool:
    """A pool by registry name (``local``, ``ray``); unknown names list what exists. `options` go to the
    pool (``ray``: ``address``, ``num_cpus_per_task``, ``max_retries``, ``temp_dir``)."""
    if name not in EXECUTORS and name in _PLUGINS:
        try:
            importlib.import_module(_PLUGINS[name])
        except ImportError as exc:
            raise UserError(f"--executor {name} needs {exc.name or 'ray'}: pip install 'domainfm[distributed]'") from None
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; known: {', '.join(executor_names())}")
    return EXECUTORS.get(name)(workers=workers, **options)


def pool_options(executor: str, ray_address: str = "") -> dict[str, Any]:
    """The pool options the CLIs pass (`--executor`, `--ray-address`), checked."""
    if ray_address and executor != "ray":
        raise UserError("--ray-address needs --executor ray")
    return {"address": ray_address} if executor == "ray" and ray_address else {}


class ShardedExecutor:
    """Run `task` over `n_tasks` shards on a pool, skipping shards already completed."""

    def __init__(self, task: Task, n_tasks: int, logging_dir: str | Path, workers: int = 1,
                 name: str = "job", start_method: str = "spawn", executor: str | WorkerPool = "local",
                 task_memory: int = 0, **pool_opts: Any) -> None:
        self.task = task
        self.task_memory = task_memory  # bytes one shard's task needs (a hint for pools that reserve memory)
        self.n_tasks = n_tasks
        self.logging_dir = Path(logging_dir)
        self.workers = workers
        self.name = name
        self.start_method = start_method
        self.executor = executor
        self.pool_opts = pool_opts

    def marker(self, rank: int) -> Path:
        return self.logging_dir / "completions" / f"{rank:05d}.json"

    def is_done(self, rank: int) -> bool:
        return self.marker(rank).exists()

    def _pool(self) -> tuple[WorkerPool, bool]:
        if isinstance(self.executor, WorkerPool):
            return self.executor, False  # the caller's pool: the caller closes it
        opts = dict(self.pool_opts)
        if self.executor == "local":
            opts.setdefault("start_method", self.start_method)
        return get_pool(self.executor, self.workers, **opts), True

    def run(self) -> list[dict[str, Any]]:
        """Run every pending shard; return the summaries of all shards, in rank order."""
        if self.n_tasks < 1:
            raise ValueError("n_tasks must be >= 1")
        pending = [r for r in range(self.n_tasks) if not self.is_done(r)]
        skipped = self.n_tasks - len(pending)
        if skipped:
            log.info("%s: %d/%d shards already completed, skipping them", self.name, skipped, self.n_tasks)
        if pending:
            pool, owned = self._pool()
            bar = progress(total=len(pending), desc=self.name, unit="shard")
            try:
                for i, out in pool.map_unordered(self.task, [(r, self.n_tasks) for r in pending], self.task_memory):
                    if out.crashed:
                        raise WorkerLost(f"{self.name}: the worker of shard {pending[i]} died "
                                         f"({type(out.error).__name__}); run the same command again to resume"
                                         ) from out.error
                    self._finish(pending[i], out.result())  # a failed shard stops the job (rerun resumes)
                    bar.update(1)
            finally:
                bar.close()
                if owned:
                    pool.close()
        return [json.loads(self.marker(r).read_text()) for r in range(self.n_tasks)]

    def _finish(self, rank: int, summary: dict[str, Any] | None) -> None:
        atomic_write_json(self.marker(rank), summary or {})


class LocalExecutor(ShardedExecutor):
    """A sharded job on this machine (the historic name; `executor=` still selects any pool)."""
