"""Readers and bad inputs: directories, git HEAD, archives, symlinks, encodings, unreadable files."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from domainfm.code.curate import readers
from domainfm.code.curate.swhid import swhid
from domainfm.core.errors import UserError


def _by_path(recs):
    return {r["path"]: r for r in recs}


def test_plan_sources_layouts_and_missing(tmp_path, corpus):
    specs = readers.plan_sources([str(corpus)])
    assert [s.name for s in specs] == ["alice/textutils", "bob/copy", "carol/near", "dave/gpl", "src"]
    assert specs[-1].include == ["loose.py"]
    assert [s.kind for s in readers.plan_sources([str(corpus / "alice__textutils")])] == ["dir"]
    with pytest.raises(UserError, match="source not found"):
        readers.plan_sources([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert readers.plan_sources([str(tmp_path / "empty")]) == []


def test_dir_reader_bad_inputs(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "ok.py").write_text("x = 1\n")
    (repo / "latin.py").write_bytes("# Grüße\nname = 'Müller'\n".encode("latin-1"))
    (repo / "big.txt").write_bytes(b"a" * 2000)
    os.symlink("loop_b", repo / "loop_a")
    os.symlink("loop_a", repo / "loop_b")
    os.symlink("/etc/hostname", repo / "outside")
    os.symlink("ok.py", repo / "inside.py")
    os.symlink("missing.py", repo / "dangling")
    os.symlink("sub", repo / "dirlink")
    os.mkfifo(repo / "fifo")
    (repo / "emptydir").mkdir()
    spec = readers.RepoSpec("repo", "dir", str(repo))
    recs = _by_path(readers.read_dir(spec, readers.list_dir(spec), max_size=1000))
    assert recs["ok.py"]["error"] is None and recs["ok.py"]["swhid"] == swhid(b"x = 1\n")
    assert recs["inside.py"]["error"] is None and recs["inside.py"]["data"] == b"x = 1\n"
    assert recs["latin.py"]["error"] is None
    assert recs["big.txt"]["error"] == "too_large" and recs["big.txt"]["swhid"] == swhid(b"a" * 2000)
    assert recs["loop_a"]["error"] == "symlink_loop" and recs["loop_b"]["error"] == "symlink_loop"
    assert recs["outside"]["error"] == "symlink_outside_repo"
    assert recs["dangling"]["error"] == "broken_symlink"
    assert recs["dirlink"]["error"] == "symlink_dir"
    assert recs["fifo"]["error"] == "special_file"
    assert "emptydir" not in recs


def test_unreadable_file_is_counted(tmp_path, monkeypatch):
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "a.py").write_text("a = 1\n")
    (repo / "b.py").write_text("b = 2\n")
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("b.py"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(readers, "open", fake_open, raising=False)
    spec = readers.RepoSpec("r", "dir", str(repo))
    recs = _by_path(readers.read_dir(spec, readers.list_dir(spec), 10_000))
    assert recs["a.py"]["error"] is None and recs["b.py"]["error"] == "unreadable"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_reader_reads_head_and_records_commit(tmp_path):
    repo = tmp_path / "g"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("print('committed')\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "b.py").write_text("B = 2\n")
    os.symlink("a.py", repo / "link.py")
    os.symlink("../../etc/passwd", repo / "escape")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    _git(repo, "remote", "add", "origin", "https://github.com/someone/gitrepo.git")
    (repo / "a.py").write_text("print('uncommitted change')\n")
    (repo / "untracked.py").write_text("nope\n")
    head = _git(repo, "rev-parse", "HEAD")
    [spec] = readers.plan_sources([str(repo)])
    assert spec.kind == "git" and spec.name == "someone/gitrepo"
    commit, recs = readers.read_git(spec, 10_000)
    recs = _by_path(recs)
    assert commit == head and set(recs) == {"a.py", "pkg/b.py", "link.py", "escape"}
    assert recs["a.py"]["data"] == b"print('committed')\n"
    blob = _git(repo, "rev-parse", "HEAD:pkg/b.py")
    assert recs["pkg/b.py"]["swhid"] == f"swh:1:cnt:{blob}" == swhid(b"B = 2\n")
    assert recs["link.py"]["data"] == b"print('committed')\n"
    assert recs["escape"]["error"] == "symlink_outside_repo"
    empty = tmp_path / "empty_git"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert readers.read_git(readers.RepoSpec("e", "git", str(empty)), 100) == (None, [])


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_archives_tar_zip_and_broken(tmp_path):
    files = {"proj-main/a.py": b"a = 1\n", "proj-main/pkg/b.py": b"b = 2\n", "proj-main/LICENSE": b"MIT"}
    _tar(tmp_path / "proj.tar.gz", files)
    _tar(tmp_path / "plain.tar", files, "w")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    for name in ("proj.tar.gz", "plain.tar", "z.zip"):
        [spec] = readers.plan_sources([str(tmp_path / name)])
        recs = _by_path(readers.read_archive(spec, 10_000))
        assert set(recs) == {"a.py", "pkg/b.py", "LICENSE"}, name
        assert recs["pkg/b.py"]["swhid"] == swhid(b"b = 2\n")
    whole = (tmp_path / "proj.tar.gz").read_bytes()
    (tmp_path / "broken.tar.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "garbage.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    for name in ("broken.tar.gz", "garbage.zip"):
        recs = readers.read_archive(readers.plan_sources([str(tmp_path / name)])[0], 10_000)
        assert recs and recs[-1]["error"] == "broken_archive", name
