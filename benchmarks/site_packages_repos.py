"""Lay out this venv's installed distributions as repositories for `domainfm code curate`.

`DEST/pypi__<name>/` holds exactly the files the distribution's `RECORD` lists (its packages and its
`*.dist-info`, without `__pycache__`), as hard links (no copy; same file system as the venv
needed), so that each package's `METADATA` and license files sit next to its code, as in a
repository. Then:

    .venv/bin/python benchmarks/site_packages_repos.py /tmp/sp_repos
    .venv/bin/domainfm code curate /tmp/sp_repos -o /tmp/sp_out --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path


def dist_name(info: Path) -> str:
    for line in (info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.lower().startswith("name:"):
            return line.split(":", 1)[1].strip().lower()
        if not line.strip():
            break
    return info.name.split("-")[0].lower()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
    args = ap.parse_args(argv)
    sp, dest = Path(args.site_packages), Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    n_dist = n_files = 0
    for info in sorted(sp.glob("*.dist-info")):
        if not (info / "RECORD").is_file() or not (info / "METADATA").is_file():
            continue
        repo = dest / f"pypi__{dist_name(info)}"
        for line in (info / "RECORD").read_text(encoding="utf-8", errors="replace").splitlines():
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line.split(",", 1)[0]
            if not rel or rel.startswith(("..", "/")) or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            src = sp / rel
            if not src.is_file() or src.is_symlink():
                continue
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, repo / rel)
            n_files += 1
        n_dist += 1
    print(f"{n_dist} distributions, {n_files} files -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
