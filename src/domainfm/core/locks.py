"""One writer per output folder: a POSIX record lock that the kernel drops when its process dies.

Two runs writing into one folder would interleave shards and checkpoints; the second one is refused with
one line instead. `fcntl.lockf` (not `flock`) because its lock belongs to the process: forked workers do not
inherit it, so a kill -9 of the main process frees the folder at once even while orphaned workers wind
down, and the rerun that resumes is never refused by a dead run. The lock file is a hidden sibling
(`.NAME.lock` next to NAME), so the output folder itself is never created or changed by the lock: stages
that check "empty folder" or list their outputs see exactly what they wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from domainfm.core.errors import UserError
from domainfm.core.io import remove_stale_temporaries

F = TypeVar("F", bound=Callable[..., Any])

def lock_path(folder: str | os.PathLike[str]) -> Path:
    p = Path(folder).absolute()
    return p.parent / f".{p.name}.lock"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the write lock of `folder` for the block; a second holder gets a `UserError` naming the first."""
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        raise UserError(f"output folder {folder} is not a writable folder")
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"cannot write to {path.parent}: {exc.strerror}") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise UserError(f"cannot lock {path}: {exc.strerror}") from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(f"output folder {folder} is being written by another process (pid {holder}); "
                            "wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if folder.is_dir() and os.environ.get("WORLD_SIZE", "1") == "1":  # sole writer: sweep a killed run's
            remove_stale_temporaries(folder)  # half-written temporaries (never trusted, they only pile up)
        yield folder
    finally:
        os.close(fd)  # closing drops the lock (and so does the kernel on kill -9)


def is_secondary_rank() -> bool:
    """A torchrun worker other than rank 0: its rank 0 holds the lock of the shared output folder."""
    return os.environ.get("RANK", "0") != "0"


def writes_output(name: str) -> Callable[[F], F]:
    """Decorator of a stage's command: hold `output_lock` on its output folder while it runs.

    The folder is the keyword argument `name` (a typer option) or the attribute `name` of the first
    positional argument (a config dataclass). An empty value is left to the stage to reject.
    """
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = kwargs.get(name)
            if out is None and args:
                out = getattr(args[0], name, None)
            if not out or is_secondary_rank():
                return fn(*args, **kwargs)
            with output_lock(out):
                try:
                    return fn(*args, **kwargs)
                except OSError as exc:  # a full disk or a read-only folder: one line, not a traceback
                    if (msg := storage_error(exc)) is None:
                        raise
                    raise UserError(f"cannot write under {out}: {msg}; completed parts are kept, partial ones "
                                    "are not trusted: free space (or fix permissions) and rerun the same command"
                                    ) from None
        return wrapper  # type: ignore[return-value]
    return deco


# errno of a write that the user must fix outside the program (space, quota, permissions, a read-only mount)
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file too large for this filesystem or limit", errno.EROFS: "read-only filesystem",
                  errno.EACCES: "permission denied"}


def storage_error(exc: OSError) -> str | None:
    """A short description when `exc` is a storage error (libraries like h5py put the errno in the text)."""
    if exc.errno in STORAGE_ERRNOS:
        return STORAGE_ERRNOS[exc.errno]
    text = str(exc)
    for code, desc in STORAGE_ERRNOS.items():
        if os.strerror(code) in text or f"errno = {code}," in text:
            return desc
    return None
