"""Readers: directories of repositories, single repositories, git repositories (HEAD through git)
and .tar/.tar.gz/.zip archives, each turned into raw file records.

A raw record is a dict ``repo_name, path, data (bytes|None), swhid, size, commit, error``; `error` is
a drop reason (``unreadable``, ``too_large``, ``symlink_outside_repo``, ``broken_archive`` ...) and the
`read` step drops it with that reason, so every input file is accounted for.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domainfm.code.curate.licenses import is_license_candidate
from domainfm.code.curate.swhid import swhid, swhid_stream
from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("curate.readers")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_REPO_MARKERS = re.compile(r"^(\.git|license.*|licence.*|copying.*|readme.*|setup\.py|setup\.cfg|pyproject\.toml|"
                           r"package\.json|cargo\.toml|go\.mod|makefile|\.gitignore|pom\.xml|build\.gradle)$",
                           re.IGNORECASE)
Raw = dict[str, Any]


@dataclass
class RepoSpec:
    """One repository to read. kind: dir | git | archive. `include`: top-level entries of a dir kept;
    `skip_dirs`: directory names not walked (e.g. ``__pycache__`` build outputs; `.git` is always skipped)."""

    name: str
    kind: str
    path: str
    include: list[str] | None = None
    skip_dirs: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def archive_stem(name: str) -> str | None:
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return None


def _repo_name(name: str) -> str:
    return name.replace("__", "/", 1) if "__" in name else name  # The Stack style "owner__repo"


def _git_origin_name(path: Path) -> str | None:
    try:
        url = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(path), "config", "--get",
                              "remote.origin.url"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"[:/]([^/:]+)/([^/]+?)(?:\.git)?/?$", url)
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _single_repo(path: Path, name: str | None = None) -> RepoSpec:
    if (path / ".git").exists():
        return RepoSpec(_git_origin_name(path) or name or path.name, "git", str(path))
    return RepoSpec(name or path.name, "dir", str(path))


def plan_sources(sources: list[str], layout: str = "auto") -> list[RepoSpec]:
    """Expand SRC arguments into repositories, in a deterministic order. A missing SRC is a UserError.

    layout: ``auto`` (a dir with .git or repo marker files at its top is one repo, else a dir of repos),
    ``repo`` (every SRC dir is one repository) or ``repos`` (every SRC dir holds repositories).
    """
    if layout not in ("auto", "repo", "repos"):
        raise UserError(f"unknown layout {layout!r}; choose auto, repo or repos")
    specs: list[RepoSpec] = []
    for src in sources:
        p = Path(src)
        if not p.exists() and not p.is_symlink():
            raise UserError(f"source not found: {src}")
        p = p.absolute()
        if p.is_file():
            stem = archive_stem(p.name)
            if stem is None:
                raise UserError(f"{src}: not a directory or a .tar/.tar.gz/.tgz/.zip archive")
            specs.append(RepoSpec(_repo_name(stem), "archive", str(p)))
            continue
        if not p.is_dir():
            raise UserError(f"{src}: not a directory or an archive")
        try:
            entries = sorted(os.scandir(p), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"cannot list {src}: {exc.strerror}") from None
        is_repo = layout == "repo" or (layout == "auto" and any(_REPO_MARKERS.match(e.name) for e in entries))
        if is_repo:
            specs.append(_single_repo(p))
            continue
        loose: list[str] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                specs.append(_single_repo(Path(e.path), _repo_name(e.name)))
            elif e.is_file(follow_symlinks=False) and archive_stem(e.name) is not None:
                specs.append(RepoSpec(_repo_name(archive_stem(e.name) or e.name), "archive", e.path))
            else:
                loose.append(e.name)
        if loose:  # files next to the repositories: kept as one more repository, never ignored
            specs.append(RepoSpec(p.name, "dir", str(p), include=loose))
        if not entries:
            log.warning("%s: empty directory, no repositories", src)
    return specs


# ----------------------------------------------------------------------------------------- directories


def list_dir(spec: RepoSpec) -> list[str]:
    """Repo-relative POSIX paths of every non-directory entry (symlinks to dirs included), sorted."""
    root = Path(spec.path)
    out: list[str] = []
    tops = spec.include if spec.include is not None else None
    skip = set(spec.skip_dirs or ())

    def walk(d: Path, rel: str) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError as exc:
            log.warning("cannot list %s: %s", d, exc.strerror)
            out.append(rel + "/" if rel else "./")  # a marker entry: read() reports it as unreadable
            return
        for e in entries:
            if e.name == ".git" and not rel:
                continue  # VCS metadata, not repository content
            r = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir(follow_symlinks=False):
                if e.name not in skip:
                    walk(Path(e.path), r)
            else:
                out.append(r)

    if tops is None:
        walk(root, "")
    else:
        for t in tops:
            tp = root / t
            if tp.is_dir() and not tp.is_symlink():
                walk(tp, t)
            else:
                out.append(t)
    return sorted(out)


def _read_dir_file(root: Path, rel: str, max_size: int) -> Raw:
    rec: Raw = {"path": rel, "data": None, "swhid": None, "size": 0, "error": None}
    full = root / rel
    if rel.endswith("/"):
        rec["error"] = "unreadable"
        return rec
    try:
        lst = os.lstat(full)
        if stat.S_ISLNK(lst.st_mode):
            try:
                st = os.stat(full)
            except OSError as exc:
                rec["error"] = "symlink_loop" if exc.errno == 40 else "broken_symlink"
                return rec
            real = os.path.realpath(full)
            if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
                rec["error"] = "symlink_outside_repo"
                return rec
            if stat.S_ISDIR(st.st_mode):
                rec["error"] = "symlink_dir"
                return rec
            lst = st
        if not stat.S_ISREG(lst.st_mode):
            rec["error"] = "special_file"
            return rec
        rec["size"] = lst.st_size
        with open(full, "rb") as fh:
            if lst.st_size > max_size:
                rec["swhid"] = swhid_stream(fh, lst.st_size)
                rec["error"] = "too_large"
                return rec
            data = fh.read()
    except OSError as exc:
        log.warning("cannot read %s: %s", full, exc.strerror)
        rec["error"] = "unreadable"
        return rec
    rec.update(data=data, swhid=swhid(data), size=len(data))
    return rec


def read_dir(spec: RepoSpec, paths: list[str], max_size: int) -> Iterator[Raw]:
    root = Path(spec.path)
    for rel in paths:
        yield _read_dir_file(root, rel, max_size)


# ------------------------------------------------------------------------------------------------- git


def _git(path: str, *args: str) -> bytes:
    return subprocess.run(["git", "-c", "safe.directory=*", "-C", path, *args], capture_output=True,
                          check=True, timeout=600).stdout


def read_git(spec: RepoSpec, max_size: int) -> tuple[str | None, list[Raw]]:
    """Every blob of HEAD's tree, read through `git cat-file --batch`; returns (commit, records)."""
    try:
        commit = _git(spec.path, "rev-parse", "--verify", "-q", "HEAD^{commit}").decode().strip()
    except subprocess.CalledProcessError:
        log.warning("%s: git repository without commits; nothing to read", spec.path)
        return None, []
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s: git failed (%s)", spec.path, exc)
        return None, [{"path": "", "data": None, "swhid": None, "size": 0, "error": "broken_git_repo"}]
    try:
        listing = _git(spec.path, "ls-tree", "-r", "-z", "--full-tree", "HEAD")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s: cannot list HEAD (%s)", spec.path, exc)
        return commit, [{"path": "", "data": None, "swhid": None, "size": 0, "error": "broken_git_repo"}]
    entries: dict[str, tuple[str, str, str]] = {}
    for item in listing.split(b"\x00"):
        if not item:
            continue
        meta, _, p = item.partition(b"\t")
        mode, typ, sha = meta.decode().split()
        entries[p.decode("utf-8", "surrogateescape")] = (mode, typ, sha)
    out: list[Raw] = []
    proc = subprocess.Popen(["git", "-c", "safe.directory=*", "-C", spec.path, "cat-file", "--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def blob(sha: str) -> bytes:
        proc.stdin.write(sha.encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        header = proc.stdout.readline().split()  # type: ignore[union-attr]
        size = int(header[2])
        data = proc.stdout.read(size)  # type: ignore[union-attr]
        proc.stdout.read(1)  # type: ignore[union-attr]
        return data

    try:
        for p in sorted(entries):
            mode, typ, sha = entries[p]
            rec: Raw = {"path": p, "data": None, "swhid": None, "size": 0, "error": None}
            if typ == "commit":
                rec["error"] = "git_submodule"
            elif mode == "120000":
                target = posixpath.normpath(posixpath.join(posixpath.dirname(p), blob(sha).decode(errors="replace")))
                if target.startswith("../") or target == ".." or target.startswith("/"):
                    rec["error"] = "symlink_outside_repo"
                elif target not in entries or entries[target][1] != "blob" or entries[target][0] == "120000":
                    rec["error"] = "broken_symlink"
                else:
                    sha = entries[target][2]
            if rec["error"] is None:
                data = blob(sha)
                rec.update(swhid="swh:1:cnt:" + sha, size=len(data))
                if len(data) > max_size:
                    rec["error"] = "too_large"
                else:
                    rec["data"] = data
            out.append(rec)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return commit, out


# -------------------------------------------------------------------------------------------- archives


def _strip_common(names: list[str]) -> str:
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def read_archive(spec: RepoSpec, max_size: int) -> list[Raw]:
    """All members of a .tar/.tar.gz/.zip; a damaged archive keeps what was readable plus one
    ``broken_archive`` record for the rest."""
    members: list[tuple[str, str, Any]] = []  # (name, kind, payload)
    broken = False
    try:
        if spec.path.lower().endswith(".zip"):
            with zipfile.ZipFile(spec.path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if info.file_size > max_size:
                        members.append((info.filename, "large", info.file_size))
                        continue
                    try:
                        members.append((info.filename, "file", zf.read(info)))
                    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError):
                        members.append((info.filename, "corrupt", None))
        else:
            with tarfile.open(spec.path, "r:*") as tf:
                for m in tf:
                    if m.isdir():
                        continue
                    if m.issym() or m.islnk():
                        members.append((m.name, "link", posixpath.normpath(
                            posixpath.join(posixpath.dirname(m.name), m.linkname) if m.issym() else m.linkname)))
                    elif not m.isfile():
                        members.append((m.name, "special", None))
                    elif m.size > max_size:
                        members.append((m.name, "large", m.size))
                    else:
                        fh = tf.extractfile(m)
                        members.append((m.name, "file", fh.read() if fh else b""))
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        log.warning("%s: broken archive (%s); %d members read before the damage", spec.path, exc, len(members))
        broken = True
    names = [n for n, _, _ in members]
    prefix = _strip_common(names) if names else ""
    files = {n: payload for n, kind, payload in members if kind == "file"}
    out: list[Raw] = []
    for name, kind, payload in sorted(members, key=lambda m: m[0]):
        rel = name[len(prefix):] if prefix and name.startswith(prefix) else name
        rel = posixpath.normpath(rel.lstrip("/"))
        rec: Raw = {"path": rel, "data": None, "swhid": None, "size": 0, "error": None}
        if rel == ".." or rel.startswith("../"):  # a path-traversal name ('../../x'): not a path in this repo
            kind = "outside"
            rec["error"] = "path_outside_repo"
        if kind == "link":
            target = payload if payload in files else None
            if payload.startswith("..") or payload.startswith("/") or (prefix and not payload.startswith(prefix)):
                rec["error"] = "symlink_outside_repo"
            elif target is None:
                rec["error"] = "broken_symlink"
            else:
                kind, payload = "file", files[target]
        if kind == "file":
            rec.update(data=payload, swhid=swhid(payload), size=len(payload))
        elif kind == "large":
            rec.update(size=payload, error="too_large")
        elif kind == "special":
            rec["error"] = "special_file"
        elif kind == "corrupt":
            rec["error"] = "broken_archive"
        out.append(rec)
    if broken:
        out.append({"path": f"<{Path(spec.path).name}>", "data": None, "swhid": None,
                    "size": os.path.getsize(spec.path), "error": "broken_archive"})
    return out


def license_files(spec: RepoSpec, listing: list[str]) -> dict[str, bytes]:
    """Contents of the license/metadata candidates of a dir repo (read whole-repo, for any shard part)."""
    root = Path(spec.path)
    out: dict[str, bytes] = {}
    for rel in listing:
        if is_license_candidate(rel):
            try:
                full = root / rel
                if full.is_file() and full.stat().st_size <= 4 << 20:
                    out[rel] = full.read_bytes()
            except OSError:
                continue
    return out
