"""A sharded local executor with completion markers (the datatrove LocalPipelineExecutor contract).

A job is `n_tasks` independent shards; `task(rank, world_size)` processes shard `rank`, writes its
outputs atomically and returns a JSON-able summary (its stats). When it returns, the executor writes
``<logging_dir>/completions/<rank>.json`` atomically. A rerun of the same job skips every shard whose
marker exists, so a run killed at any moment (kill -9 included) resumes where it stopped and ends
with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from domainfm.core.io import atomic_write_json
from domainfm.core.progress import get_logger, progress

Task = Callable[[int, int], dict[str, Any]]
log = get_logger("executor")


class LocalExecutor:
    """Run `task` over `n_tasks` shards on `workers` processes, skipping shards already completed."""

    def __init__(self, task: Task, n_tasks: int, logging_dir: str | Path, workers: int = 1,
                 name: str = "job", start_method: str = "spawn") -> None:
        self.task = task
        self.n_tasks = n_tasks
        self.logging_dir = Path(logging_dir)
        self.workers = workers
        self.name = name
        self.start_method = start_method

    def marker(self, rank: int) -> Path:
        return self.logging_dir / "completions" / f"{rank:05d}.json"

    def is_done(self, rank: int) -> bool:
        return self.marker(rank).exists()

    def run(self) -> list[dict[str, Any]]:
        """Run every pending shard; return the summaries of all shards, in rank order."""
        if self.n_tasks < 1:
            raise ValueError("n_tasks must be >= 1")
        pending = [r for r in range(self.n_tasks) if not self.is_done(r)]
        skipped = self.n_tasks - len(pending)
        if skipped:
            log.info("%s: %d/%d shards already completed, skipping them", self.name, skipped, self.n_tasks)
        bar = progress(total=len(pending), desc=self.name, unit="shard")
        if self.workers <= 1 or len(pending) <= 1:
            for rank in pending:
                self._finish(rank, self.task(rank, self.n_tasks))
                bar.update(1)
        else:
            ctx = mp.get_context(self.start_method)
            with ProcessPoolExecutor(max_workers=min(self.workers, len(pending)), mp_context=ctx) as pool:
                futs = {pool.submit(self.task, r, self.n_tasks): r for r in pending}
                for fut in as_completed(futs):
                    self._finish(futs[fut], fut.result())
                    bar.update(1)
        bar.close()
        return [json.loads(self.marker(r).read_text()) for r in range(self.n_tasks)]

    def _finish(self, rank: int, summary: dict[str, Any] | None) -> None:
        atomic_write_json(self.marker(rank), summary or {})
