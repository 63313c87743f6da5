"""The run record (`RUN_DIR/run.json`): commit, command lines, machine, and the wall time of each stage.

The demo writes it when it ends; each invocation appends its command line and merges its stage timings
into the existing record, so `domainfm demo code` then `domainfm demo pathology` into one folder keep both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from domainfm.core.io import atomic_write_json

RUN_RECORD = "run.json"


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the source tree `domainfm` runs from (with `-dirty` when it has local changes), or None."""
    here = start or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")  # only when the run imported it: never pay torch's import for a record
    try:
        if torch is not None and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # a record without a GPU name is still a record
        pass
    return info


def write_run_record(out: Path, timings: dict[str, float], argv: list[str] | None = None,
                     wall_s: float | None = None) -> Path:
    """Merge this invocation (command line, stage timings, machine, commit) into `out/run.json`."""
    out = Path(out)
    path = out / RUN_RECORD
    rec: dict[str, Any] = {}
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            rec = {}  # a damaged record is replaced, not trusted
        if not isinstance(rec, dict):
            rec = {}
    cmd = " ".join(argv if argv is not None else ["domainfm", *sys.argv[1:]])
    rec.setdefault("commands", []).append({"command": cmd, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           "wall_s": None if wall_s is None else round(wall_s, 1)})
    rec["timings"] = {**rec.get("timings", {}), **{k: float(v) for k, v in timings.items()}}
    rec["commit"] = git_commit()
    rec["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    return path
