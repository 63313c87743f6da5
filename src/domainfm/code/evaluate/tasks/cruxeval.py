"""CRUXEval-O (Gu et al. 2024): predict the output of a short Python function; checked by execution.

The prompt is the paper's direct output-prediction prompt (two worked examples, then the function and
`assert f(<input>) == ??`); the model answers inside [ANSWER] ... [/ANSWER]. A prediction passes when
`assert f(<input>) == <prediction>` holds when run.
"""

from __future__ import annotations

from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any

_INSTRUCTION = (
    "You are given a Python function and an assertion containing an input to the function. Complete the "
    "assertion with a literal (no unsimplified expressions, no function calls) containing the output when "
    "executing the provided code on the given input, even if the function is incorrect or incomplete. Do NOT "
    "output any extra information. Provide the full assertion with the correct output in [ANSWER] and "
    "[/ANSWER] tags, following the examples."
)
_SHOTS = (
    ("def f(n):\n    return n", "17", "17"),
    ('def f(s):\n    return s + "a"', '"x9j"', '"x9ja"'),
)


def _block(code: str, inp: str) -> str:
    return f"[PYTHON]\n{code}\nassert f({inp}) == ??\n[/PYTHON]\n"


class CruxEvalO(Task):
    """CRUXEval output prediction (800 functions); the predicted literal is asserted by running f."""

    name = "cruxeval-o"
    stop = ("[/ANSWER]",)
    max_new_tokens = 128
    files = ("code/cruxeval/cruxeval.jsonl",)
    timeout = 10.0

    def read(self, paths: list[Path]) -> list[Problem]:
        shots = "".join(f"{_block(c, i)}[ANSWER]\nassert f({i}) == {o}\n[/ANSWER]\n\n" for c, i, o in _SHOTS)
        out = []
        for r in read_jsonl_any(paths[0]):
            prompt = f"{_INSTRUCTION}\n\n{shots}{_block(r['code'], r['input'])}[ANSWER]\n"
            out.append(Problem(r["id"], prompt, reference=r["output"], meta={"code": r["code"], "input": r["input"]}))
        return out

    def postprocess(self, problem: Problem, generation: str) -> str:
        ans = super().postprocess(problem, generation).strip()
        if ans.startswith("assert") and "==" in ans:  # "assert f(x) == y" -> "y"
            ans = ans.split("==", 1)[1].strip()
        return ans

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        src = f"{m['code']}\nassert f({m['input']}) == {completion}\n"
        return python_program(src, self.timeout)

    def exact_match(self, problem: Problem, completion: str) -> bool | None:
        return None
