"""MBPP (Austin et al. 2021): the 500 test problems (task ids 11-510), bigcode-harness prompt format.

Prompt (InCoder style, as the bigcode harness builds it): a docstring holding the description and the
first test assertion, then the model writes the whole function. Checked by running all `test_list`
assertions (after `test_setup_code`, which is empty for every test problem but kept for fidelity).
"""

from __future__ import annotations

from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any

MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
TEST_IDS = range(11, 511)


class MBPP(Task):
    """MBPP test split (500 problems, ids 11-510); prompt = description + first test in a docstring."""

    name = "mbpp"
    stop = MBPP_STOP
    files = ("code/mbpp/mbpp.jsonl",)
    timeout = 10.0

    def read(self, paths: list[Path]) -> list[Problem]:
        rows = {int(r["task_id"]): r for r in read_jsonl_any(paths[0])}
        out = []
        for tid in TEST_IDS:
            r = rows[tid]
            prompt = f'"""\n{r["text"]}\n{r["test_list"][0]}\n"""\n'
            out.append(Problem(f"MBPP/{tid}", prompt, reference=r["code"],
                               meta={"tests": r["test_list"], "setup": r.get("test_setup_code") or ""}))
        return out

    def program(self, problem: Problem, completion: str) -> Program:
        tests = "\n".join(problem.meta["tests"])
        src = f"{problem.prompt}{completion}\n{problem.meta['setup']}\n{tests}\n"
        return python_program(src, self.timeout)
