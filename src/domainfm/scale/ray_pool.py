"""The ``ray`` executor: every call of `WorkerPool.map_unordered` is one Ray task.

* ``address`` given (``--ray-address HOST:6379`` or ``auto``): join that cluster and leave it running.
  Otherwise reuse the Ray instance this process already has, or start a new local one with `workers`
  CPUs (stopped again by `close`, and its session folder removed).
* A task whose worker process dies (kill -9, OOM killer, a node lost) is run again, up to
  ``max_retries`` times; an exception raised by the task itself is not retried (it would fail again)
  and comes back in its `Outcome`, unwrapped from Ray's `RayTaskError`.
* ``num_cpus_per_task`` CPUs are reserved per task (the sharded steps are single-threaded: 1), and the
  ``memory`` a caller names (Ray's logical ``memory`` resource: a task starts only on a node with that
  much unreserved; the global dedup as one task names its measured bound).
* At most ``max_in_flight`` tasks are submitted at a time (default 2 x the cluster's CPUs), so that the
  driver's memory does not grow with the number of shards (100M files = 50k shards).
* Quiet and bounded: no dashboard, no usage report, Ray's own logs at ERROR and the workers' output
  kept in the session folder (``log_to_driver=False``); a local instance lives under
  ``$TMPDIR/domainfm-ray-<uid>`` (not ``/tmp/ray``, never in the repository) with a small object store
  (tasks return summaries, their outputs go to files).
* With ``address``, the ``DOMAINFM_*`` variables of the driver (``DOMAINFM_DATA``, ...) are passed to
  the tasks (``runtime_env``), which run in the cluster's environment; a local instance inherits them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError
from domainfm.core.executor import EXECUTORS, Outcome, ShardedExecutor, WorkerPool
from domainfm.core.progress import get_logger

log = get_logger("scale.ray")
KILL_ONCE_ENV = "DOMAINFM_RAY_KILL_ONCE"  # test hook, see `_call`


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The body of every task. Test hook: with ``DOMAINFM_RAY_KILL_ONCE=<dir>``, the first task to
    start creates ``<dir>/killed`` and SIGKILLs its own worker (a real worker death, retried by Ray)."""
    flag = os.environ.get(KILL_ONCE_ENV)
    if flag:
        try:
            fd = os.open(Path(flag) / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    return fn(*args)


def _send_auth_token() -> bool:
    """Make a joining driver present this user's Ray token, when there is one; True if it will.

    Ray >= 2.59 turns token authentication on for a cluster started (``ray start --head`` or a local
    ``ray.init``) where a token exists (``~/.ray/auth_token``, which any local ``ray.init`` writes), but
    a client that joins with an address sends no token unless ``RAY_AUTH_MODE=token`` (the review of
    ray-project/ray#64755 reports it): the join fails with ``InvalidAuthToken``. A cluster without
    authentication accepts a client that sends one (measured with Ray 2.60), so we send it whenever the
    user has one and did not choose a mode. Ray's own ``ray.init`` sets this variable the same way for
    the processes it starts."""
    if "RAY_AUTH_MODE" in os.environ:
        return os.environ["RAY_AUTH_MODE"] == "token"
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:  # Ray caches its config at import: refresh it, as Ray's own setter does
        with contextlib.suppress(Exception):  # private API; a failure leaves the join's error message
            from ray._raylet import Config

            Config.initialize("")
    return True


def default_temp_dir() -> Path:
    # short on purpose: Ray's unix sockets live under it and a socket path is limited to 107 bytes
    return Path(tempfile.gettempdir()) / f"domainfm-ray-{os.getuid()}"


@EXECUTORS.register("ray", help="Ray tasks: a local Ray instance, or a cluster with --ray-address")
class RayPool(WorkerPool):
    name = "ray"

    def __init__(self, workers: int = 1, address: str = "", num_cpus_per_task: float = 1,
                 num_gpus_per_task: float = 0, max_retries: int = 3, max_in_flight: int = 0, temp_dir: str = "",
                 object_store_mb: int = 256, **options: Any) -> None:
        super().__init__(workers, **options)
        self.address = address
        self.num_cpus_per_task = num_cpus_per_task
        self.num_gpus_per_task = num_gpus_per_task
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self.temp_dir = temp_dir
        self.object_store_mb = object_store_mb
        self._started = False  # connected by us (close disconnects)
        self._own = False  # a local instance started by us (close stops it)
        self._session_dir: str | None = None

    def _ensure(self) -> Any:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report and no banner about it
        token = bool(self.address) and _send_auth_token()  # before `import ray` reads its config
        import ray

        if ray.is_initialized():
            return ray
        common: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                  "log_to_driver": False, "configure_logging": True}
        if self.address:
            log.info("joining the Ray cluster at %s", self.address)
            try:
                ray.init(address=self.address, **common)
            except ConnectionError as exc:
                hint = ("; if the cluster uses token authentication, point RAY_AUTH_TOKEN_PATH at its token"
                        if token else "")
                raise UserError(f"--ray-address {self.address}: {' '.join(str(exc).split())}{hint}") from None
        else:
            tmp = Path(self.temp_dir) if self.temp_dir else default_temp_dir()
            tmp.mkdir(parents=True, exist_ok=True)
            log.info("starting a local Ray instance with %d CPUs under %s", self.workers, tmp)
            # address="local": a new instance, never one found on this machine (RAY_ADDRESS, a running
            # `ray start`); workers at this process's priority, not Ray's default +15 (as the local
            # executor's processes: a `nice`d command stays nice, a busy machine is shared alike)
            ray.init(address="local", num_cpus=self.workers, object_store_memory=self.object_store_mb * 2**20,
                     _temp_dir=str(tmp), _system_config={"worker_niceness": 0}, **common)
            self._own = True
            with contextlib.suppress(Exception):  # private API; only used to clean up after ourselves
                self._session_dir = ray._private.worker._global_node.get_session_dir_path()
        self._started = True
        return ray

    def _map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], memory: int = 0
             ) -> Iterator[tuple[int, Outcome]]:
        ray = self._ensure()
        from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

        lost = (WorkerCrashedError, OutOfMemoryError, NodeDiedError)  # the process or its node died

        env = {k: v for k, v in os.environ.items() if k.startswith("DOMAINFM_")}
        # a local instance inherited this process's environment; the workers of a cluster we joined did not
        task = ray.remote(_call).options(num_cpus=self.num_cpus_per_task, num_gpus=self.num_gpus_per_task,
                                         max_retries=self.max_retries, retry_exceptions=False,
                                         **({"memory": int(memory)} if memory > 0 else {}),
                                         runtime_env={"env_vars": env} if env and self.address else None)
        cpus = int(ray.cluster_resources().get("CPU", self.workers))
        window = self.max_in_flight or max(2, 2 * cpus)
        fn_ref = ray.put(fn)  # shipped once, not once per task
        todo = iter(enumerate(calls))
        running: dict[Any, int] = {}

        def submit() -> None:
            for i, args in todo:
                running[task.remote(fn_ref, args)] = i
                if len(running) >= window:
                    return

        submit()
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                i = running.pop(done[0])
                try:
                    value = ray.get(done[0])
                except lost as exc:  # died more than max_retries times (OOM: Ray's memory monitor killed it)
                    yield i, Outcome(error=exc, crashed=True)
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    yield i, Outcome(error=cause if isinstance(cause, BaseException) else exc)
                else:
                    yield i, Outcome(value=value)
                submit()
        finally:
            for ref in running:  # the caller stopped early (an error): do not leave tasks behind
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        if not self._started:
            return  # never connected, or reused an instance someone else started: leave it alone
        self._started = False
        import ray

        ray.shutdown()  # stops the instance we started; from a cluster we joined it only disconnects
        if self._own and self._session_dir:  # logs and sockets of our instance: keep the temp dir bounded
            shutil.rmtree(self._session_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                latest = Path(self._session_dir).parent / "session_latest"
                if latest.is_symlink() and not latest.exists():
                    latest.unlink()
        self._own = False


class RayExecutor(ShardedExecutor):
    """A sharded job whose pending shards run as Ray tasks; the driver writes the completion markers."""

    def __init__(self, task: Any, n_tasks: int, logging_dir: str | Path, workers: int = 1, name: str = "job",
                 address: str = "", **pool_opts: Any) -> None:
        if address:
            pool_opts["address"] = address
        super().__init__(task, n_tasks, logging_dir, workers=workers, name=name, executor="ray", **pool_opts)
