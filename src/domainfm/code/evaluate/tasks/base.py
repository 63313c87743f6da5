"""The task interface: every benchmark is one small module defining a `Task` subclass.

A task says where its data lives, how to build the prompt (or prefix/suffix for infilling), which stop
sequences end a generation, how to turn a completion into a program that checks itself (exit 0 + no
exception = pass), and what its reference answer is (used by the soundness tests).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from domainfm.code.evaluate.sandbox import ExecResult, Program
from domainfm.code.generate.stopping import apply_stop
from domainfm.core.errors import UserError
from domainfm.core.io import sha256_file


@dataclass
class Problem:
    task_id: str
    prompt: str  # the completion prompt, or the prefix for infilling tasks
    suffix: str | None = None  # infilling only
    reference: str | None = None  # a correct completion / middle / answer, when the benchmark has one
    meta: dict[str, Any] = field(default_factory=dict)  # task-specific fields (tests, entry point, ...)


@dataclass
class LoadedData:
    problems: list[Problem]
    files: dict[str, str]  # path -> sha256 of every file read


class Task:
    """Base class. Subclasses set the class attributes and implement `load` and `program`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    language: ClassVar[str] = "python"
    mode: ClassVar[str] = "complete"  # "complete" or "infill"
    stop: ClassVar[tuple[str, ...]] = ()
    max_new_tokens: ClassVar[int] = 512
    files: ClassVar[tuple[str, ...]] = ()  # relative to the data dir, e.g. "code/mbpp/mbpp.jsonl"
    timeout: ClassVar[float] = 10.0  # wall seconds per program
    metric: ClassVar[str] = "execution"  # "execution" or "exact_match"

    # -- data ---------------------------------------------------------------------------------------
    def resolve(self, data_dir: str | os.PathLike[str] | None) -> list[Path]:
        """The task's data files; a missing one is a one-line error naming the file expected."""
        out = []
        for rel in self.files:
            root = Path(data_dir) if data_dir else (Path(os.environ["DOMAINFM_DATA"])
                                                     if os.environ.get("DOMAINFM_DATA") else None)
            cands = [] if root is None else [root / rel, root / Path(rel).name]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                where = str(cands[0]) if cands else f"$DOMAINFM_DATA/{rel}"
                hint = "" if root is not None else " (set DOMAINFM_DATA or pass --data-dir)"
                raise UserError(f"task {self.name!r} needs its data file {where}, which does not exist{hint}")
            out.append(found)
        return out

    def load(self, data_dir: str | os.PathLike[str] | None = None) -> LoadedData:
        paths = self.resolve(data_dir)
        problems = self.read(paths)
        return LoadedData(problems, {str(p): sha256_file(p) for p in paths})

    def read(self, paths: list[Path]) -> list[Problem]:
        raise NotImplementedError

    def unavailable(self) -> str | None:
        """Why this task cannot run on this machine (e.g. a language runtime is missing), else None."""
        return None

    def as_samples_problem(self, problem: Problem) -> Problem:
        """The problem as completions in a samples file see it: relative to the benchmark's own prompt.

        Tasks that generate from a prepared prompt (bigcode strips HumanEval's and MultiPL-E's) keep the
        unstripped one in `meta["raw_prompt"]`; human-eval / MultiPL-E completion files are relative to it.
        """
        raw = problem.meta.get("raw_prompt")
        if raw is None:
            return problem
        return replace(problem, prompt=raw, reference=problem.meta.get("raw_reference", problem.reference))

    # -- generation -----------------------------------------------------------------------------------
    def postprocess(self, problem: Problem, generation: str) -> str:
        """Cut a raw generation to the completion that is executed (stop sequences first)."""
        return truncate_at_stop(generation, self.stop)

    # -- checking -------------------------------------------------------------------------------------
    def program(self, problem: Problem, completion: str) -> Program | None:
        """A self-checking program, or None for tasks scored by exact match only."""
        return None

    def prepare(self, problems: list[Problem], sandbox: Any, workers: int) -> None:
        """Work done once per problem before any completion runs (EvalPlus: the expected outputs)."""

    def judge(self, problem: Problem, completion: str, result: ExecResult) -> ExecResult:
        """The verdict on an executed program (default: the sandbox's own verdict)."""
        return result

    def exact_match(self, problem: Problem, completion: str) -> bool | None:
        """Exact match against the reference (None when the task has none)."""
        if problem.reference is None:
            return None
        return completion.strip() == problem.reference.strip()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "mode": self.mode, "metric": self.metric,
                "stop": list(self.stop), "files": list(self.files)}


# cut `text` at the earliest stop sequence (not kept): the project's one stop-truncation function,
# shared with generation and serving (code/generate/stopping.py)
truncate_at_stop = apply_stop


def read_jsonl_any(path: Path) -> list[dict[str, Any]]:
    """JSONL (optionally gzipped); a broken line is a one-line UserError naming file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
    return rows


def python_program(source: str, timeout: float) -> Program:
    return Program("python", source, timeout=timeout)
