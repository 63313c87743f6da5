"""Warm sandbox workers: one long-lived bubblewrap sandbox per parallel slot, each running `_worker.py`.

Starting a bubblewrap sandbox (namespaces, mounts, a Python interpreter) costs far more than running a
HumanEval check, so the sandbox is started once per slot and each sample is forked inside it into fresh
limits and a freshly emptied `/tmp` (see `_worker.py` for the per-sample isolation and clean-up).

The harness side kept here owns all of a sample's data: it creates the sample's stdin/stdout/stderr pipes,
hands their far ends to the worker over a SOCK_SEQPACKET control socket (SCM_RIGHTS), writes the program
into stdin and reads stdout/stderr itself with byte caps. So the worker, which Python samples are forked
from, never holds any sample's source or output. The harness enforces its own deadline on each reply and
throws a worker away (SIGKILL to bwrap's process group, which takes the sandbox's PID namespace down with
it) whenever it dies, hangs, or reports that it could not clean up.

Workers are started from one long-lived thread per pool: bwrap's `--die-with-parent` uses the parent-death
signal, which the kernel sends when the *thread* that spawned bwrap exits, so a worker spawned from a
short-lived executor thread would die with it.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from domainfm.core.progress import get_logger

log = get_logger("code.evaluate.workers")

WORKER_SOURCE = (Path(__file__).with_name("_worker.py")).read_text(encoding="utf-8")
HEAD_BYTES, TAIL_BYTES = 4096, 32 << 10  # kept of a stream that is not read in full


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


class _Capture:
    """Head + tail of a stream (or all of it, up to the cap), and the total byte count."""

    def __init__(self, keep_all: bool, cap: int) -> None:
        self.head, self.tail, self.total = bytearray(), bytearray(), 0
        self.keep = cap if keep_all else TAIL_BYTES

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.tail += chunk
        if len(self.tail) > self.keep:
            del self.tail[: len(self.tail) - self.keep]

    def value(self) -> bytes:
        if self.total <= len(self.head):
            return bytes(self.head)
        if self.total <= self.keep:
            return bytes(self.tail)  # the tail still holds the whole stream
        return bytes(self.head) + b"\n...\n" + bytes(self.tail)


class Worker:
    """One warm sandbox: a bwrap process running `_worker.py`, driven over its control socket."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.alive = True

    def hello(self, deadline: float) -> bool:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                return False
        try:
            return json.loads(self.sock.recv(4096) or b"{}").get("ready") is True
        except (OSError, ValueError):
            return False

    def run(self, request: dict, stdin: bytes, cap: int, full_stdout: bool, deadline: float) -> Reply:
        """Run one sample: pipes to the worker, program in, outputs out, the worker's reply."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], [in_r, out_w, err_w])
        except OSError:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            self.kill()
            return Reply(None, b"", b"", lost="the sandbox worker was gone before the program started")
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        out, err = _Capture(full_stdout, cap), _Capture(False, cap)
        sinks = {out_r: out, err_r: err}
        reply: dict | None = None
        flooded = False
        sel = selectors.DefaultSelector()
        os.set_blocking(in_w, False)
        if stdin:
            sel.register(in_w, selectors.EVENT_WRITE)
        else:
            os.close(in_w)
        for fd in (out_r, err_r):
            sel.register(fd, selectors.EVENT_READ)
        sel.register(self.sock, selectors.EVENT_READ)
        view, pos = memoryview(stdin), 0
        try:
            while reply is None or len(sel.get_map()) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    fd = key.fd
                    if fd == in_w:
                        try:
                            pos += os.write(in_w, view[pos:pos + 65536])
                        except OSError:  # the program closed its stdin or is gone
                            pos = len(stdin)
                        if pos >= len(stdin):
                            sel.unregister(in_w)
                            os.close(in_w)
                    elif fd == self.sock.fileno():
                        sel.unregister(self.sock)
                        try:
                            reply = json.loads(self.sock.recv(65536) or b"null")
                        except (OSError, ValueError):
                            reply = None
                        if reply is None:
                            break
                    else:
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            sel.unregister(fd)
                            os.close(fd)
                            continue
                        sinks[fd].add(chunk)
                        if sinks[fd].total > cap and not flooded:
                            flooded = True  # stop the program; keep reading until the worker replies
                            try:
                                self.sock.send(b"abort")
                            except OSError:
                                pass
                if reply is None and self.sock.fileno() not in sel.get_map():
                    break
        finally:
            for key in list(sel.get_map().values()):
                if key.fd != self.sock.fileno():
                    os.close(key.fd)
            sel.close()
        if reply is None:
            hung = self.proc.poll() is None
            self.kill()
            why = ("the sandbox did not answer in time (the program stopped or blocked its worker)" if hung
                   else "the program killed its sandbox")
            return Reply(None, out.value(), err.value(), timed_out=hung, lost=why)
        return Reply(reply["rc"], out.value(), err.value(), reply["timed_out"], flooded, reply["seconds"],
                     reply["clean"])

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
        try:
            self.sock.close()
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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        box: dict = {"done": threading.Event()}
        kwargs = {**self.popen_kwargs, "pass_fds": (theirs.fileno(),)}
        self._jobs.put(([*self.argv, str(theirs.fileno())], kwargs, box))
        box["done"].wait()
        theirs.close()
        if "error" in box:
            ours.close()
            raise box["error"]
        w = Worker(box["proc"], ours)
        if not w.hello(time.monotonic() + 60):
            w.kill()
            raise RuntimeError("the sandbox worker did not start")
        with self._lock:
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
