"""Small real corpora for the curation tests: stdlib modules copied into repositories + bad inputs."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])


def make_corpus(root: Path) -> Path:
    """root/src: 3 repositories of real stdlib files (one an exact copy, one a near copy) + loose file."""
    src = root / "src"
    a = src / "alice__textutils"
    a.mkdir(parents=True)
    for name in ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py"):
        shutil.copy(STDLIB / name, a / name)
    shutil.copy(STDLIB / "LICENSE.txt", a / "LICENSE")
    shutil.copytree(a, src / "bob__copy")  # exact duplicates of alice's files
    c = src / "carol__near"
    c.mkdir()
    text = (STDLIB / "textwrap.py").read_text()
    (c / "textwrap2.py").write_text(text.replace("width", "line_width", 3))  # a near duplicate
    (c / "contact.py").write_text("AUTHOR = 'carol.smith@example.org'\nHOST = '52.14.160.21'\n"
                                  "password = 'hunter2isMyPass'\n" + (STDLIB / "colorsys.py").read_text())
    (c / "data.bin").write_bytes(bytes(range(256)) * 4)
    (c / "big.py").write_text("x = 1\n" * 200_000)
    d = src / "dave__gpl"
    d.mkdir()
    shutil.copy(STDLIB / "bisect.py", d / "lib.py")
    (d / "COPYING").write_text("GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007\n")
    (src / "loose.py").write_text("print('hello world from a loose file')\n")
    return src


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path)


FAST = ["--no-humaneval", "--mbpp", "none", "--files-per-shard", "6"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, output of one uninterrupted run) shared by the resume tests of a module."""
    from domainfm.cli import main

    root = tmp_path_factory.mktemp("ref")
    src = make_corpus(root)
    assert main(["code", "curate", str(src), "-o", str(root / "out"), *FAST]) == 0
    return src, root / "out"
