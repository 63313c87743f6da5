"""User-facing errors: the CLI prints these as one line on stderr and exits non-zero."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """A mistake in the user's input (missing file, bad flag, unreadable data). Never a traceback."""

    exit_code = 2


class WorkerLost(UserError):
    """A worker process died (kill -9, the OOM killer, a lost node) and its work was not brought back.
    Not the user's mistake, but worth one line, not a traceback: the same command resumes (every
    finished shard keeps its completion marker)."""

    exit_code = 1


def require(module: str, extra: str) -> ModuleType:
    """Import a heavy optional dependency, or fail with a one-line hint naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise UserError(
            f"'{module}' is not installed ({exc}); install it with: pip install 'domainfm[{extra}]'"
        ) from exc
