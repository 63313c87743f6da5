"""Warm sandbox workers: one long-lived bubblewrap sandbox per parallel slot, each running `_worker.py`.

Starting a bubblewrap sandbox (namespaces, mounts, a Python interpreter) costs far more than running a
HumanEval check, so the sandbox is started once per slot and each sample is forked inside it into fresh
limits and a freshly emptied `/tmp` (see `_worker.py` for the per-sample isolation and clean-up). The
harness side kept here only moves requests and replies, enforces its own deadline on each reply, and throws
a worker away (SIGKILL to bwrap's process group, which takes the sandbox's PID namespace down with it)
whenever it dies, hangs, or reports that it could not clean up.

Workers are started from one long-lived thread per pool: bwrap's `--die-with-parent` uses the parent-death
signal, which the kernel sends when the *thread* that spawned bwrap exits, so a worker spawned from a
short-lived executor thread would die with it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import selectors
import signal
import struct
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from domainfm.core.progress import get_logger

log = get_logger("code.evaluate.workers")

WORKER_SOURCE = (Path(__file__).with_name("_worker.py")).read_text(encoding="utf-8")


@dataclass
class Reply:
    rc: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    flooded: bool = False
    seconds: float = 0.0
    clean: bool = True
    lost: str = ""  # non-empty when the worker gave no reply (killed or stopped by the sample, or hung)


class Worker:
    """One warm sandbox: a bwrap process running `_worker.py`, talked to over its stdin/stdout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.alive = True

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                try:
                    chunk = os.read(fd, n - len(buf))
                except BlockingIOError:
                    continue
                if not chunk:
                    return None
                buf += chunk
        return bytes(buf)

    def read_msg(self, deadline: float) -> dict | None:
        head = self._read_exact(4, deadline)
        if head is None:
            return None
        body = self._read_exact(struct.unpack(">I", head)[0], deadline)
        return None if body is None else json.loads(body)

    def call(self, request: dict, deadline: float) -> Reply:
        data = json.dumps(request).encode()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return Reply(None, b"", b"", lost="the sandbox worker was gone before the program started")
        msg = self.read_msg(deadline)
        if msg is None:
            hung = self.proc.poll() is None
            self.kill()
            why = ("the sandbox did not answer in time (the program stopped or blocked its worker)" if hung
                   else "the program killed its sandbox")
            return Reply(None, b"", b"", timed_out=hung, lost=why)
        return Reply(msg["rc"], base64.b64decode(msg["stdout"]), base64.b64decode(msg["stderr"]),
                     msg["timed_out"], msg["flooded"], msg["seconds"], msg["clean"])

    def kill(self) -> None:
        """SIGKILL bwrap's process group; --die-with-parent + the PID namespace take every sandboxed process."""
        if not self.alive:
            return
        self.alive = False
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps SIGKILLed processes promptly
            log.error("sandbox worker %d did not die", self.proc.pid)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass


def _spawner(jobs: queue.Queue) -> None:
    """The pool's long-lived spawning thread (see the module docstring for why it must outlive requests)."""
    while True:
        job = jobs.get()
        if job is None:
            return
        argv, kwargs, box = job
        try:
            box["proc"] = subprocess.Popen(argv, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the requesting thread
            box["error"] = exc
        box["done"].set()


def _shutdown(idle: list[Worker], lock: threading.Lock, jobs: queue.Queue) -> None:
    with lock:
        workers, idle[:] = list(idle), []
    for w in workers:
        w.kill()
    jobs.put(None)


class WorkerPool:
    """Idle warm workers; `acquire` hands one out (starting a new one if none is idle), `release` takes it back."""

    def __init__(self, argv: list[str], popen_kwargs: dict) -> None:
        self.argv = argv
        self.popen_kwargs = popen_kwargs
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.started = 0  # workers started so far (the benchmark and the tests read it)
        self._finalizer = weakref.finalize(self, _shutdown, self._idle, self._lock, self._jobs)

    def _spawn(self) -> Worker:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=_spawner, args=(self._jobs,), daemon=True,
                                                name="domainfm-sandbox-spawner")
                self._thread.start()
        box: dict = {"done": threading.Event()}
        self._jobs.put((self.argv, self.popen_kwargs, box))
        box["done"].wait()
        if "error" in box:
            raise box["error"]
        w = Worker(box["proc"])
        hello = w.read_msg(time.monotonic() + 60)
        if not hello or not hello.get("ready"):
            w.kill()
            raise RuntimeError("the sandbox worker did not start")
        self.started += 1
        return w

    def acquire(self) -> Worker:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive and w.proc.poll() is None:
                    return w
                w.kill()
        return self._spawn()

    def release(self, w: Worker) -> None:
        if not w.alive:
            return
        with self._lock:
            if self._finalizer.alive:
                self._idle.append(w)
                return
        w.kill()

    def close(self) -> None:
        self._finalizer()
