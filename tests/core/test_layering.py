"""The architecture rule: core imports neither domain; the two domains never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import domainfm

PKG = Path(domainfm.__file__).parent
FORBIDDEN = {
    "core": ("domainfm.code", "domainfm.pathology"),
    "code": ("domainfm.pathology",),
    "pathology": ("domainfm.code",),
    "report": ("domainfm.code", "domainfm.pathology"),  # it reads the domains' files, never their code
    "scale": ("domainfm.code", "domainfm.pathology"),  # executors run any command's tasks, know none
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def test_layering_rules_hold() -> None:
    violations = []
    for part, banned in FORBIDDEN.items():
        files = list((PKG / part).rglob("*.py"))
        assert files, f"no modules under {part}"
        for f in files:
            for name in _imports(f):
                if name.startswith(banned):
                    violations.append(f"{f.relative_to(PKG)} imports {name}")
    assert not violations, "\n".join(violations)


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import domainfm.pathology.mil\nfrom domainfm.code import cli\n")
    assert {"domainfm.pathology.mil", "domainfm.code"} <= _imports(bad)


def test_import_is_light() -> None:
    """`import domainfm` (and the CLI module) pulls in no heavy library."""
    code = ("import sys, domainfm, domainfm.cli, domainfm.core.steps, domainfm.core.executor;"
            "heavy = [m for m in ('torch','transformers','pyarrow','h5py','openslide','sklearn','tokenizers','ray')"
            " if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
