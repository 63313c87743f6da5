"""The warm sandbox worker: runs INSIDE one long-lived bubblewrap sandbox and starts each sample from there.

This file is not imported by the harness: its text is handed to the sandbox's system `python3 -I -S -B -c`
(stdlib only, no domainfm), with the number of its control socket as the only argument. The harness talks to
it over that socket (AF_UNIX, SOCK_SEQPACKET): one JSON request per sample, carrying the sample's three
pipe ends (stdin, stdout, stderr) as SCM_RIGHTS descriptors, and one JSON reply. The harness writes the
program into the stdin pipe and reads stdout/stderr itself: the worker never sees a sample's source, input or
output, so its memory holds nothing of any sample.

Per sample the worker forks a child that starts a new session, takes the three pipe ends as 0/1/2, closes
every other descriptor, applies the sample's fresh resource limits (CPU, address space, file size, open
files, processes, no core dumps, no POSIX message queues), gets a clean environment, and then
- for a Python sample (`mode: python`), runs the program read from stdin as `python3 -I -S -B -` would, in a
  fresh `__main__` module. Forking a pristine worker that has already imported the common standard modules
  (`typing`, `re`, `collections`, ...) saves the interpreter start and those imports for every sample;
  since the worker holds no sample data, the child inherits nothing of any other sample;
- for anything else, execs the command (a compiler, `/bin/sh -c ...`, node).
When the sample's main process exits (or its time is up, or the harness asks to abort it after an output
flood), every process it left is SIGKILLed (`kill(-1)`: everything in this PID namespace except the worker
and the namespace's init), repeated until none is left; `/tmp` and `/dev/shm` are emptied; and the worker
checks that no System V IPC object is left and that its own resource limits, priority and CPU set are
unchanged (a sample runs under the same uid, so it could `prlimit`/renice the worker). If anything is not
clean the reply says `clean: false` and the harness discards the whole sandbox.

The worker makes itself non-dumpable (prctl PR_SET_DUMPABLE 0): a sample cannot ptrace it or open its /proc
files (memory, descriptors). A sample can still kill or stop the worker; the harness then gets no reply in
time, reports the sample as failed, kills the sandbox and starts a fresh one.
"""

# bisect ... typing: imported once here so that Python samples, forked from this pristine worker, need not
import bisect  # noqa: F401
import collections  # noqa: F401
import ctypes
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import re  # noqa: F401
import resource
import selectors
import signal
import socket
import string  # noqa: F401
import sys
import time
import typing  # noqa: F401

_LIBC = ctypes.CDLL(None, use_errno=True)
_SAMPLE_NAME = b"dfm-sample"  # /proc/PID/comm of every sample process (tests find leftovers by it)


def _limits(lim):
    mb = 1 << 20
    cpu = int(lim["cpu"])
    for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                       (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
                       (resource.RLIMIT_FSIZE, (lim["file_size_mb"] * mb,) * 2),
                       (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                       (resource.RLIMIT_CORE, (0, 0)),
                       (resource.RLIMIT_MSGQUEUE, (0, 0)),
                       (resource.RLIMIT_NPROC, (lim["nproc"],) * 2)):
        resource.setrlimit(res, value)


def _run_python():
    """What `python3 -I -S -B -` does with a program on stdin, in this (forked, pristine) interpreter."""
    import types

    source = sys.stdin.buffer.read()
    main = types.ModuleType("__main__")
    main.__file__ = "<stdin>"
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv[:] = ["-"]
    status = 0
    try:
        exec(compile(source, "<stdin>", "exec"), main.__dict__)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code & 0xFF
        else:
            try:
                sys.stderr.write(f"{code}\n")
            except Exception:  # noqa: BLE001
                pass
            status = 1
    except BaseException:  # noqa: BLE001 - uncaught, as the interpreter reports it (without this frame)
        etype, value, tb = sys.exc_info()
        sys.excepthook(etype, value, tb.tb_next if tb is not None else None)
        status = 1
    # interpreter shutdown: wait for non-daemon threads, run atexit handlers, flush the standard streams
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        status = status or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            status = 120 if status == 0 else status
    return status


def _child(req, fds):
    """In the forked child: fresh session, descriptors, limits and environment; then run the sample."""
    try:
        os.setsid()
        _LIBC.prctl(15, _SAMPLE_NAME, 0, 0, 0)  # PR_SET_NAME
        _LIBC.prctl(4, 1, 0, 0, 0)  # dumpable again, like any fresh process (only the worker hides itself)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        if req.get("stdout") == "null":  # nobody reads it: as with `> /dev/null`, a flood costs nothing
            null = os.open("/dev/null", os.O_WRONLY)
            os.dup2(null, 1)
        os.closerange(3, 65536)
        os.chdir(req["cwd"])
        _limits(req["limits"])
        os.environ.clear()
        os.environ.update(req["env"])
        if req.get("mode") == "python":
            os._exit(_run_python())
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execve(req["argv"][0], req["argv"], req["env"])
    except BaseException as exc:  # noqa: BLE001 - report and leave; never return into the worker loop
        try:
            os.write(2, f"sandbox: cannot start the program: {exc}\n".encode())
        finally:
            os._exit(127)
    os._exit(127)


def _others():
    """PIDs in this namespace other than init (1) and the worker itself."""
    me = os.getpid()
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in (1, me)]


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_all(deadline_s=2.0):
    """SIGKILL every other process of the sandbox until none is left (fork bombs race the first sweep)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap()
        if not _others():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.002)


def _wipe(top):
    """Remove everything below `top` (a tmpfs); True if it is empty afterwards."""
    for _ in range(2):  # a second pass after making unreadable directories readable again
        for root, dirs, files in os.walk(top, topdown=False):
            for name in files:
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass
            for name in dirs:
                p = os.path.join(root, name)
                try:
                    if os.path.islink(p):
                        os.unlink(p)
                    else:
                        os.rmdir(p)
                except OSError:
                    try:
                        os.chmod(p, 0o700)
                    except OSError:
                        pass
        try:
            left = os.listdir(top)
        except OSError:
            return False
        if not left:
            return True
        for name in left:
            p = os.path.join(top, name)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
            except OSError:
                pass
    return not os.listdir(top)


def _sysv_clean():
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                if len(fh.read().splitlines()) > 1:  # a header line, then one line per object
                    return False
        except OSError:
            pass
    return True


def _own_state():
    """What a same-uid sample could change in the worker from outside: its limits, priority, CPU set."""
    limits = tuple(resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_"))
    return limits, os.getpriority(os.PRIO_PROCESS, 0), tuple(sorted(os.sched_getaffinity(0)))


def _run(sock, req, fds, baseline):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(req, fds)
    for fd in fds:
        os.close(fd)
    deadline = time.monotonic() + req["timeout"]
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    status, timed_out, aborted = None, False, False
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = not aborted
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            if key.fd == pidfd:
                status = os.waitpid(pid, 0)[1]
            elif not aborted:  # the harness asks to stop the sample (output limit) or has gone away
                sock.recv(64)
                aborted = True
                deadline = time.monotonic()
    sel.close()
    os.close(pidfd)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    seconds = time.perf_counter() - t0
    clean = _kill_all()  # the sample's leftovers die now, so its pipes reach EOF on the harness side
    clean = _wipe("/tmp") and _wipe("/dev/shm") and _sysv_clean() and clean and _own_state() == baseline
    return {"rc": os.waitstatus_to_exitcode(status), "timed_out": timed_out, "aborted": aborted,
            "seconds": seconds, "clean": clean}


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    _LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: our memory and /proc files are out of a sample's reach
    os.chdir("/tmp")
    baseline = _own_state()
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        except OSError:
            return
        if not msg:
            return
        if len(fds) != 3:  # a late "abort" for a sample that had already ended: nothing to do
            for fd in fds:
                os.close(fd)
            continue
        sock.send(json.dumps(_run(sock, json.loads(msg), fds, baseline)).encode())


main()
