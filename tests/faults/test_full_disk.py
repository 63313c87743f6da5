"""A full disk and a read-only output folder: one clear line (no traceback), and nothing half-written that a
rerun would trust: the rerun with space equals the uninterrupted output.

The small disk is a size-limited tmpfs (mount needs root/CAP_SYS_ADMIN, as in our CI container); elsewhere
RLIMIT_FSIZE stands in for it (EFBIG on the first file over the limit, SIGXFSZ ignored).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import stage_inputs as si
from harness import cli_env
from snapshots import tree_bytes
from test_kill9 import FAST, TILE, _curate_snapshot, _tile_snapshot

pytestmark = pytest.mark.slow


def _can_mount(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
                        ).returncode == 0 if os.geteuid() == 0 else False
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    return ok


@contextlib.contextmanager
def small_disk(root: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at root/disk, unmounted afterwards."""
    disk = root / "disk"
    disk.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fsize_limit(nbytes: int):  # noqa: ANN202
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


def _run(args: list[str], preexec=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "domainfm", *args], env=cli_env(), capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("domainfm: error: ") and any(w in last for w in words), last


CASES = {  # name -> (inputs builder, command for an output folder, snapshot, tmpfs size that is too small)
    "code curate": (si.curate_sources, lambda i, o: ["code", "curate", str(i), "-o", str(o), *FAST],
                    _curate_snapshot, "48k"),
    "code pack": (si.pack_inputs, lambda i, o: ["code", "pack", str(i[0]), "--tokenizer", str(i[1]), "-o", str(o),
                                                "--seq-len", "32", "--seed", "5", "--val-fraction", "0.2",
                                                "--shard-mb", "0.005"], tree_bytes, "24k"),
    "pathology tile": (si.slides, lambda i, o: ["pathology", "tile", str(i), "-o", str(o), *TILE],
                       _tile_snapshot, "40k"),
}
# `pathology tile` at 64k fills the disk while coords/*.h5 is written: it used to print the one-line error and
# then die with SIGSEGV (h5py could not close the file whose write failed); the file is now built in memory
@pytest.mark.parametrize(("name", "size"), [*((n, c[3]) for n, c in CASES.items()), ("pathology tile", "64k")])
def test_full_disk_then_rerun_with_space(name: str, size: str, tmp_path: Path) -> None:
    build, cmd, snapshot, _ = CASES[name]
    inputs = build(tmp_path / "in")
    ref = tmp_path / "ref"
    assert _run(cmd(inputs, ref)).returncode == 0
    if _can_mount(tmp_path):
        with small_disk(tmp_path, size) as disk:
            out = disk / "out"
            _assert_one_line_error(_run(cmd(inputs, out)), "no space left")
            subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)  # space again
            rerun = _run(cmd(inputs, out))
            assert rerun.returncode == 0, rerun.stderr[-3000:]
            assert snapshot(out) == snapshot(ref)
    else:  # no mount here: the per-file size limit
        _file_size_limit_then_rerun(name, inputs, ref, tmp_path)


def _file_size_limit_then_rerun(name: str, inputs, ref: Path, tmp_path: Path) -> None:  # noqa: ANN001
    _, cmd, snapshot, _ = CASES[name]
    out = tmp_path / "out"
    _assert_one_line_error(_run(cmd(inputs, out), _fsize_limit(4096)), "too large")
    rerun = _run(cmd(inputs, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(out) == snapshot(ref)


@pytest.mark.parametrize("name", ["code curate", "code pack", "pathology tile"])
def test_file_size_limit_then_rerun(name: str, tmp_path: Path) -> None:
    """RLIMIT_FSIZE = 4 KB: the first bigger file fails (EFBIG). It caught `code pack` refusing its own rerun
    ("exists and is not a pack in progress") when the plan was the file that failed, and `pathology tile`
    recording EFBIG as each slide's failure (exit 1) instead of stopping the batch with the one-line error."""
    build, cmd, _, _ = CASES[name]
    inputs = build(tmp_path / "in")
    ref = tmp_path / "ref"
    assert _run(cmd(inputs, ref)).returncode == 0
    _file_size_limit_then_rerun(name, inputs, ref, tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_read_only_output_folder(name: str, tmp_path: Path) -> None:
    build, cmd, snapshot, _ = CASES[name]
    inputs = build(tmp_path / "in")
    if _can_mount(tmp_path):
        with small_disk(tmp_path, "64m") as disk:
            (disk / "out").mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            _assert_one_line_error(_run(cmd(inputs, disk / "out")), "read-only", "Read-only", "not a writable")
            assert not list((disk / "out").iterdir())
    elif os.geteuid() == 0:
        pytest.skip("root ignores file modes and may not mount here: no read-only folder can be made")
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
        _assert_one_line_error(_run(cmd(inputs, out)), "not a writable", "permission denied")
        out.chmod(0o755)
        assert not list(out.iterdir())
