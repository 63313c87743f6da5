"""The run folder as the report sees it: one pruned walk, and loaders that turn a bad file into a warning.

A section never crashes the page: a loader raises `Malformed` with a one-line reason, the section
catches it and shows that line instead of its content.
"""

from __future__ import annotations

import base64
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# folders that hold bulk data (tile images, token shards, caches, work areas): never walked
PRUNE = {"tiles", "tile_cache", ".work", "_work", "tb", "shards", "removed", "checkpoints", "train", "val",
         "__pycache__", ".git"}
KEEP_SUFFIXES = {".json", ".jsonl", ".csv", ".png", ".md", ".parquet", ".yaml", ".html"}
MAX_DEPTH = 6
MAX_IMAGE_BYTES = 8 << 20  # a larger PNG is not embedded (the page must stay light enough to open)


class Malformed(Exception):
    """A file the report cannot read; its message is the one-line warning shown in the page."""


@dataclass
class RunFolder:
    root: Path
    files: list[Path] = field(default_factory=list)  # relative paths, sorted

    @classmethod
    def scan(cls, root: Path) -> RunFolder:
        root = Path(root)
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            depth = len(rel.parts)
            # `train`/`val` are pruned only as packed-token folders, not as the code/train stage folder
            dirnames[:] = sorted(d for d in dirnames
                                 if depth < MAX_DEPTH and not (d in PRUNE and not _is_stage_dir(rel, d, dirnames)))
            found.extend(rel / f for f in filenames if Path(f).suffix in KEEP_SUFFIXES)
        return cls(root, sorted(found))

    def named(self, name: str) -> list[Path]:
        return [p for p in self.files if p.name == name]

    def glob(self, pattern: str) -> list[Path]:
        return [p for p in self.files if p.match(pattern)]

    def path(self, rel: Path) -> Path:
        return self.root / rel


def _is_stage_dir(parent: Path, name: str, siblings: list[str]) -> bool:
    """`code/train` and `pathology/tiles` are stage folders of the demo; `packed/train` (token shards) and a
    tiling output's `tiles/` (tile images, beside its `coords/`) are bulk data."""
    if name == "train":
        return parent.name == "code"
    if name == "tiles":
        return "coords" not in siblings
    return False


def load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise Malformed(f"{path.name}: unreadable ({exc.__class__.__name__})") from exc
    except ValueError as exc:
        raise Malformed(f"{path.name}: not valid JSON ({str(exc).splitlines()[0]})") from exc


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        raise Malformed(f"{Path(path).name}: line {i} is not valid JSON") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Malformed(f"{Path(path).name}: unreadable ({exc.__class__.__name__})") from exc
    return rows


def load_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Malformed(f"{Path(path).name}: unreadable CSV ({exc.__class__.__name__})") from exc
    return rows


def need(obj: Any, *keys: str, where: str) -> Any:
    """obj[k1][k2]...; a missing key or a wrong type is a `Malformed` naming the file."""
    for k in keys:
        if not isinstance(obj, dict) or k not in obj:
            raise Malformed(f"{where}: no {'.'.join(keys)!r} field")
        obj = obj[k]
    return obj


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_uri(path: Path) -> str:
    """The PNG as a data URI (the page embeds every image: it opens offline, from anywhere)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise Malformed(f"{Path(path).name}: {size / 1e6:.0f} MB, too large to embed")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise Malformed(f"{Path(path).name}: unreadable ({exc.__class__.__name__})") from exc
    if not data.startswith(PNG_MAGIC):
        raise Malformed(f"{Path(path).name}: not a PNG image")
    try:  # a truncated or corrupt PNG would show as a broken image: check its chunks (CRCs, IEND) first
        import io

        from PIL import Image

        Image.open(io.BytesIO(data)).verify()
    except ImportError:
        pass  # no Pillow: the signature check above is all we can do
    except Exception as exc:  # Pillow raises several types (SyntaxError, OSError, ...) for a damaged file
        raise Malformed(f"{Path(path).name}: damaged PNG ({exc.__class__.__name__})") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
