"""A real curated corpus (stdlib modules in three repositories) and its attribution index."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
# the training files (three repositories) and a held-out set of real files that are not in the corpus
TRAIN = {
    "alice__text": ["textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "string.py", "difflib.py", "csv.py"],
    "bob__data": ["heapq.py", "bisect.py", "queue.py", "sched.py", "statistics.py", "fractions.py", "decimal.py",
                  "numbers.py"],
    "carol__net": ["ipaddress.py", "netrc.py", "mailbox.py", "smtplib.py", "ftplib.py", "poplib.py"],
}
HELD_OUT = ["argparse.py", "calendar.py", "configparser.py", "gettext.py", "pprint.py", "tabnanny.py",
            "tokenize.py", "traceback.py", "zipapp.py", "wave.py"]


@pytest.fixture(scope="session")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.cli import main

    root = tmp_path_factory.mktemp("attr")
    src = root / "src"
    for repo, names in TRAIN.items():
        (src / repo).mkdir(parents=True)
        shutil.copy(STDLIB / "LICENSE.txt", src / repo / "LICENSE")
        for name in names:
            shutil.copy(STDLIB / name, src / repo / name)
    out = root / "corpus"
    assert main(["code", "curate", str(src), "-o", str(out), "--no-humaneval", "--mbpp", "none",
                 "--files-per-shard", "8"]) == 0
    assert len(list((out / "data").glob("*.parquet"))) >= 2
    return out


@pytest.fixture(scope="session")
def index(curated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.cli import main

    out = tmp_path_factory.mktemp("idx") / "index"
    assert main(["code", "index", str(curated), "-o", str(out)]) == 0
    return out


def corpus_texts(corpus: Path) -> list[dict]:
    from domainfm.core.io import read_parquet_rows

    return list(read_parquet_rows(sorted((corpus / "data").glob("*.parquet"))))
