"""Hostile programs: each must be contained, reported as a failed sample, and leave harness and host intact.

Each program is a HumanEval "completion" of problem 0, so it also fails the problem's tests; the point of the
test is what it could do to the host while it runs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from domainfm.code.evaluate.sandbox import Program, Sandbox, SandboxLimits


def _sandbox_pids() -> set[int]:
    """Sample processes: named `dfm-sample` by the warm worker (fork children keep the name), or running
    our one-shot interpreter command line (unsafe mode)."""
    pids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_bytes().strip()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if comm == b"dfm-sample" or (len(cmd) >= 5 and cmd[1:5] == [b"-I", b"-S", b"-B", b"-"]):
            pids.add(int(d.name))
    return pids


def _wait_gone(before: set[int], secs: float = 5.0) -> set[int]:
    end = time.time() + secs
    left = _sandbox_pids() - before
    while left and time.time() < end:
        time.sleep(0.1)
        left = _sandbox_pids() - before
    return left


def _run(sb: Sandbox, body: str, timeout: float = 3.0):
    # wrapped as a function body that then fails HumanEval/0's check, like a model completion would
    src = (f"def has_close_elements(numbers, threshold):\n    return None\n\n{body}\n\n"
           "assert has_close_elements([1.0, 2.0], 0.5) is False\n")
    return sb.run(Program("python", src, timeout=timeout))


@pytest.fixture()
def strict(sandbox: Sandbox) -> Sandbox:
    return Sandbox(SandboxLimits(timeout=3.0, cpu_seconds=3, nproc=32))


def test_fork_bomb_is_contained(strict: Sandbox) -> None:
    before = _sandbox_pids()
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # the detector must see the bomb's processes while it runs
        while not stop.is_set():
            seen.update(_sandbox_pids() - before)
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.perf_counter()
    res = _run(strict, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    stop.set()
    th.join(5)
    assert len(seen) >= 2, "the fork bomb's processes were never seen: the leftover check would be vacuous"
    assert not res.passed and res.status == "timed out"
    assert time.perf_counter() - t0 < 15
    assert _wait_gone(before) == set(), "fork bomb processes survived the run"


def test_fork_bomb_hits_the_process_limit(strict: Sandbox) -> None:
    res = _run(strict, "import os, sys\nn = 0\nfor _ in range(500):\n    try:\n        if os.fork() == 0:\n"
                       "            import time; time.sleep(30)\n        n += 1\n    except OSError:\n        break\n"
                       "sys.stderr.write(f'forked {n}\\n')\nraise SystemExit(f'forked {n}')")
    assert not res.passed
    n = int(res.detail.split()[-1])
    assert n < 32, f"RLIMIT_NPROC did not bite: {n} forks"


def test_huge_allocation_fails_cleanly(strict: Sandbox) -> None:
    res = _run(strict, "x = bytearray(100 * 2**30)")
    assert not res.passed and "MemoryError" in res.detail


def test_infinite_loop_times_out(strict: Sandbox) -> None:
    t0 = time.perf_counter()
    res = _run(strict, "while True:\n    pass", timeout=2.0)
    assert res.status == "timed out" and res.result == "timed out"
    assert time.perf_counter() - t0 < 10


def test_10gb_file_write_is_capped(strict: Sandbox) -> None:
    res = _run(strict, "f = open('/tmp/big', 'wb')\nfor _ in range(10240):\n    f.write(b'x' * (1 << 20))",
               timeout=20)
    assert not res.passed
    assert "File too large" in res.detail or "No space left" in res.detail


def test_many_files_cannot_fill_memory(strict: Sandbox) -> None:
    body = ("import os\nfor d in ('/tmp', '/dev/shm', '/dev', '/'):\n    for i in range(40):\n        try:\n"
            "            open(f'{d}/f{i}', 'wb').write(b'x' * (32 << 20))\n        except OSError:\n"
            "            break\n    else:\n        raise SystemExit(f'{d} took 1.25 GB')")
    res = _run(strict, body, timeout=30)
    assert not res.passed and "took" not in res.detail, res.detail


def test_host_files_are_out_of_reach(strict: Sandbox, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    body = (f"import os\nfor p in [{str(victim)!r}, {str(tmp_path / 'new.txt')!r}, '/etc/passwd', "
            f"'/usr/bin/evil', {str(Path.home() / 'evil')!r}, '/work_evil']:\n"
            "    try:\n        open(p, 'w').write('pwned')\n    except OSError:\n        pass\n"
            f"seen = os.path.exists({str(victim)!r})\nraise SystemExit(f'host file visible: {{seen}}')")
    res = _run(strict, body)
    assert not res.passed and "visible: False" in res.detail
    assert victim.read_text() == "original"
    assert not (tmp_path / "new.txt").exists()
    assert not Path("/usr/bin/evil").exists() and not (Path.home() / "evil").exists()


def test_no_network_to_host_loopback(strict: Sandbox) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    hits: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(conn)
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        # the server is reachable from the host itself
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        time.sleep(0.3)
        assert len(hits) == 1
        body = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "    raise SystemExit('connected')\nexcept OSError as e:\n    raise SystemExit(f'blocked: {e}')")
        res = _run(strict, body)
        assert not res.passed and "blocked" in res.detail
        time.sleep(0.3)
        assert len(hits) == 1, "the sandbox reached the host's loopback"
    finally:
        stop.set()
        th.join(2)
        srv.close()


def test_killing_parent_and_group_does_not_hurt_harness(strict: Sandbox) -> None:
    me = os.getpid()
    body = (f"import os, signal\nfor pid in (os.getppid(), {me}, 1, -1):\n    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
            "try:\n    os.killpg(0, signal.SIGKILL)\nexcept OSError:\n    pass")
    res = _run(strict, body)
    assert not res.passed
    os.kill(me, 0)  # we are alive
    # and the harness keeps working afterwards
    ok = strict.run(Program("python", "assert 1 + 1 == 2\n"))
    assert ok.passed


def test_setsid_daemon_does_not_survive(strict: Sandbox) -> None:
    before = _sandbox_pids()
    body = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(120)\n    os._exit(0)\ntime.sleep(0.5)")
    res = _run(strict, body)
    assert not res.passed
    assert _wait_gone(before) == set(), "a setsid daemon outlived its sandbox"


def test_stdout_flood_and_stderr_flood(strict: Sandbox) -> None:
    t0 = time.perf_counter()
    res = _run(strict, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout=2.0)
    assert res.status == "timed out"
    lim = Sandbox(SandboxLimits(timeout=10.0, output_bytes=1 << 20))
    res2 = _run(lim, "import sys\nwhile True:\n    sys.stderr.write('y' * 65536)", timeout=10.0)
    assert not res2.passed and res2.detail == "output limit exceeded"
    assert len(res2.stderr_tail) <= 2000
    assert time.perf_counter() - t0 < 20


def test_early_exit_zero_is_not_a_pass(strict: Sandbox) -> None:
    res = strict.run(Program("python", "import os\nos._exit(0)\nassert False\n"))
    assert not res.passed and "before the tests finished" in res.detail
    res = strict.run(Program("python", "raise SystemExit(0)\nassert False\n"))
    assert not res.passed


# -- warm sandboxes: one sandbox serves many samples; nothing may pass from one sample to the next ----------

LEAVE_BEHIND = """
import ctypes, os, time
open('/tmp/note', 'w').write('secret')
os.makedirs('/tmp/d/e', exist_ok=True)
open('/tmp/d/e/f', 'w').write('x')
os.chmod('/tmp/d', 0)
open('/tmp/.hidden', 'w').write('x')
open('/dev/shm/seg', 'w').write('x')
if os.fork() == 0:  # a daemon that outlives the sample and keeps writing
    os.setsid()
    if os.fork() == 0:
        while True:
            open('/tmp/later', 'w').write('still here')
            time.sleep(0.01)
    os._exit(0)
time.sleep(0.2)
"""

SEE_NOTHING = """
import os
me, worker = os.getpid(), os.getppid()
others = sorted(int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, me, worker))
seen = (os.listdir('/tmp'), os.listdir('/dev/shm'), others)
assert seen == ([], [], []), seen
"""


def test_nothing_passes_from_one_sample_to_the_next() -> None:
    sb = Sandbox(SandboxLimits(timeout=5.0))
    try:
        assert sb.run(Program("python", LEAVE_BEHIND)).passed
        for _ in range(2):
            res = sb.run(Program("python", SEE_NOTHING))
            assert res.passed, res.result
        assert sb.workers_started == 1  # the same warm sandbox served all three samples
    finally:
        sb.close()


def test_sysv_ipc_or_a_tampered_worker_gets_a_fresh_sandbox() -> None:
    sb = Sandbox(SandboxLimits(timeout=5.0))
    shm = ("import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget(0, 4096, 0o1600) >= 0\n")  # IPC_CREAT
    renice = "import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)\n"
    lower = "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (16, 16))\n"
    see_ipc = "assert open('/proc/sysvipc/shm').read().count('\\n') == 1, 'shm left'\n"
    try:
        for i, src in enumerate((shm, renice, lower), start=1):
            assert sb.run(Program("python", src)).passed
            res = sb.run(Program("python", see_ipc + SEE_NOTHING))
            assert res.passed, res.result
            assert sb.workers_started == i + 1  # the tainted sandbox was thrown away, a fresh one served
    finally:
        sb.close()


def test_worker_memory_and_files_are_out_of_reach() -> None:
    sb = Sandbox(SandboxLimits(timeout=5.0))
    body = ("import os\nppid = os.getppid()\nopened = []\n"
            "for name in ('mem', 'environ', 'fd/0', 'fd/1', 'cmdline_w'):\n"
            "    path = f'/proc/{ppid}/' + name.replace('cmdline_w', 'comm')\n"
            "    try:\n        open(path, 'r+b' if name == 'cmdline_w' else 'rb').read(1)\n"
            "        opened.append(name)\n    except OSError:\n        pass\n"
            "raise SystemExit(f'opened {opened}')")
    try:
        res = sb.run(Program("python", body))
        assert res.detail == "opened []", res.detail
    finally:
        sb.close()


def test_stopping_the_worker_costs_one_sample_only() -> None:
    sb = Sandbox(SandboxLimits(timeout=1.0))
    try:
        t0 = time.perf_counter()
        res = sb.run(Program("python", "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n"))
        assert not res.passed and "did not answer" in res.detail
        assert time.perf_counter() - t0 < 30
        assert sb.run(Program("python", "assert 1 + 1 == 2\n")).passed
        assert sb.workers_started == 2
    finally:
        sb.close()


def test_a_python_sample_finds_nothing_of_earlier_samples_in_its_memory() -> None:
    """Python samples are forked from the warm worker: the worker must never have held any sample's data."""
    import hashlib
    import secrets

    head, tail = f"dfmsecret-{secrets.token_hex(8)}", f"{secrets.token_hex(8)}-end"
    digest = hashlib.sha256(tail.encode()).hexdigest()
    scan = f"""
import hashlib
P, H, n = {head.encode()!r}, {digest!r}, {len(tail)}
found = 0
with open('/proc/self/mem', 'rb', 0) as mem:
    for line in open('/proc/self/maps'):
        addr, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in addr.split('-'))
        if 'r' not in perms or hi - lo > (256 << 20):
            continue
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except OSError:
            continue
        i = data.find(P)
        while i != -1:  # the secret is never built here: only its head, and the hash of its tail
            found += hashlib.sha256(data[i + len(P):i + len(P) + n]).hexdigest() == H
            i = data.find(P, i + 1)
assert found == 0, f'found an earlier sample {{found}} times'
"""
    sb = Sandbox(SandboxLimits(timeout=20.0))
    try:
        assert sb.run(Program("python", f"SECRET = {head + tail!r}\nprint(SECRET)\nassert SECRET\n")).passed
        res = sb.run(Program("python", scan))
        assert res.passed, res.result
        assert sb.workers_started == 1
    finally:
        sb.close()
