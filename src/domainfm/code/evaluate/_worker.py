"""The warm sandbox worker: runs INSIDE one long-lived bubblewrap sandbox and starts each sample from there.

This file is not imported by the harness: its text is handed to the sandbox's system `python3 -I -S -B -c`
(stdlib only, no domainfm). The harness talks to it over its stdin/stdout with length-prefixed JSON
(4-byte big-endian length + UTF-8 JSON): one request per sample, one reply per request.

Per sample the worker
1. writes the request's files into the empty, private `/tmp` (the sample's scratch directory);
2. forks a child that starts a new session, closes every inherited descriptor, applies the sample's fresh
   resource limits (CPU, address space, file size, open files, processes, no core dumps, no POSIX message
   queues) and execs the program with a clean environment;
3. feeds stdin and reads stdout/stderr with byte caps until EOF or the wall-clock deadline;
4. tears the sample down completely before replying: SIGKILL to every process it may signal
   (`kill(-1)`: everything in this PID namespace except itself and the namespace's init), repeated until
   only init and the worker remain; then empties `/tmp` and `/dev/shm`, and checks that no System V IPC
   object is left and that the worker's own resource limits, priority and CPU set are unchanged (a sample
   runs under the same uid, so it could `prlimit`/renice the worker). If anything cannot be cleaned the
   reply says `clean: false` and the harness discards the whole sandbox, so no sample can leave anything
   behind for the next one.

The worker makes itself non-dumpable (prctl PR_SET_DUMPABLE 0): a sample runs under the same uid but cannot
ptrace it or open its /proc files (memory, descriptors). A sample can still kill or stop the worker; the
harness then sees no reply (EOF or its own deadline), reports the sample as failed, kills the sandbox and
starts a fresh one.
"""

import base64
import ctypes
import json
import os
import resource
import selectors
import signal
import struct
import sys
import time

_IN = sys.stdin.buffer
_OUT = sys.stdout.buffer


def _read_msg():
    head = _IN.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    return json.loads(_IN.read(n))


def _write_msg(obj):
    data = json.dumps(obj).encode()
    _OUT.write(struct.pack(">I", len(data)) + data)
    _OUT.flush()


def _child(req, r_in, w_out, w_err):
    """In the forked child: fresh session, descriptors, limits and environment, then exec."""
    try:
        os.setsid()
        os.dup2(r_in, 0)
        if req.get("stdout") == "null":  # nobody reads it: as with `> /dev/null`, a flood costs nothing
            w_out = os.open("/dev/null", os.O_WRONLY)
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        os.closerange(3, 65536)
        os.chdir(req["cwd"])
        lim = req["limits"]
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
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execve(req["argv"][0], req["argv"], req["env"])
    except BaseException as exc:  # noqa: BLE001 - report and leave; never return into the worker loop
        try:
            os.write(2, f"sandbox: cannot start {req['argv'][0]}: {exc}\n".encode())
        finally:
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
        left = _others()
        if not left:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.002)


def _wipe(top):
    """Remove everything below `top` (a tmpfs); True if it is empty afterwards."""
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
                    os.chmod(p, 0o700)
                    os.rmdir(p)
            except OSError:
                pass
    # a directory made unreadable by the sample is walked again after the chmod above
    try:
        left = os.listdir(top)
    except OSError:
        return False
    if left:
        for name in left:
            p = os.path.join(top, name)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, 0o700)
            except OSError:
                pass
        for root, dirs, files in os.walk(top, topdown=False):
            for name in files:
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass
            for name in dirs:
                try:
                    os.rmdir(os.path.join(root, name))
                except OSError:
                    pass
        left = os.listdir(top)
    return not left


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


_BASELINE = None


def _run(req):
    t0 = time.perf_counter()
    for name, text in req.get("files", {}).items():
        with open(os.path.join(req["cwd"], name), "wb") as fh:
            fh.write(text.encode("utf-8", "surrogatepass"))
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(req, r_in, w_out, w_err)
    for fd in (r_in, w_out, w_err):
        os.close(fd)
    data = req.get("stdin", "").encode("utf-8", "surrogatepass")
    deadline = time.monotonic() + req["timeout"]
    cap = req["output_bytes"]
    # head (4 KB) + tail kept per stream; `stdout: full` keeps all of stdout (up to the cap) for output checks
    keeps = {r_out: cap if req.get("stdout") == "full" else 32 << 10, r_err: 32 << 10}
    bufs = {r_out: [bytearray(), bytearray(), 0], r_err: [bytearray(), bytearray(), 0]}  # head, tail, total
    timed_out = flooded = False
    sel = selectors.DefaultSelector()
    os.set_blocking(w_in, False)
    if data:
        sel.register(w_in, selectors.EVENT_WRITE)
    else:
        os.close(w_in)
    sel.register(r_out, selectors.EVENT_READ)
    sel.register(r_err, selectors.EVENT_READ)
    view, pos = memoryview(data), 0
    # the sample ends when its main process exits (as a one-shot sandbox ends with its command): then
    # whatever it left running is killed at once, so its pipes reach EOF and are drained
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ)
    status = None
    while not flooded and (status is None or len(sel.get_map()) > 0):
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = status is None
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            fd = key.fd
            if fd == pidfd:
                sel.unregister(pidfd)
                status = os.waitpid(pid, 0)[1]
                _kill_all()
                deadline = min(deadline, time.monotonic() + 2.0)
                continue
            if fd == w_in:
                try:
                    pos += os.write(w_in, view[pos:pos + 65536])
                except OSError:
                    pos = len(data)
                if pos >= len(data):
                    sel.unregister(w_in)
                    os.close(w_in)
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                sel.unregister(fd)
                os.close(fd)
                continue
            b = bufs[fd]
            b[2] += len(chunk)
            if len(b[0]) < 4096:
                b[0] += chunk[: 4096 - len(b[0])]
            b[1] += chunk
            if len(b[1]) > keeps[fd]:
                del b[1][: len(b[1]) - keeps[fd]]
            if b[2] > cap:
                flooded = True
    for fd in list(sel.get_map()):
        sel.unregister(fd)
        os.close(fd)
    sel.close()
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    clean = _kill_all()
    clean = _wipe("/tmp") and _wipe("/dev/shm") and _sysv_clean() and clean and _own_state() == _BASELINE

    def text(fd):
        head, tail, total = bufs[fd]
        if total <= len(head):
            raw = bytes(head)
        elif total <= keeps[fd]:
            raw = bytes(tail)  # the tail still holds the whole stream
        else:
            raw = bytes(head) + b"\n...\n" + bytes(tail)
        return base64.b64encode(raw).decode()

    return {"rc": rc, "timed_out": timed_out, "flooded": flooded, "seconds": seconds, "clean": clean,
            "stdout": text(r_out), "stderr": text(r_err)}


def main():
    global _BASELINE
    _BASELINE = _own_state()
    try:  # a sample runs as the same uid: make our memory and /proc files unreachable for it
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:  # noqa: BLE001
        pass
    os.chdir("/tmp")
    _write_msg({"ready": True, "pid": os.getpid()})
    while True:
        req = _read_msg()
        if req is None:
            return
        _write_msg(_run(req))


main()
