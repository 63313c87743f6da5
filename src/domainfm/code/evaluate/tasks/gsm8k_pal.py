"""GSM8K with program-aided reasoning (PAL, Gao et al. 2023): the model writes `def solution():` that returns
the answer; the program is executed and its return value compared with the reference number.
"""

from __future__ import annotations

import re
from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any

# three worked examples in the PAL style (written for domainfm; GSM8K-like, not taken from the test set)
_SHOTS = (
    ("A baker made 24 muffins. She sold 15 of them and then baked 8 more. How many muffins does she have now?",
     "    muffins_made = 24\n    muffins_sold = 15\n    muffins_baked_later = 8\n"
     "    result = muffins_made - muffins_sold + muffins_baked_later\n    return result\n"),
    ("Tom buys 3 notebooks at $4 each and a pen for $2. He pays with a $20 bill. How much change does he get?",
     "    notebook_cost = 3 * 4\n    pen_cost = 2\n    paid = 20\n"
     "    result = paid - (notebook_cost + pen_cost)\n    return result\n"),
    ("A train travels 60 miles per hour for 2.5 hours. How many miles does it travel?",
     "    speed = 60\n    hours = 2.5\n    result = speed * hours\n    return result\n"),
)


def _question(q: str) -> str:
    return f"Q: {q}\n\n# solution in Python:\n\n\ndef solution():\n    \"\"\"{q}\"\"\"\n"


def parse_answer(answer: str) -> float:
    """The reference number after '####' (commas removed)."""
    return float(answer.split("####")[-1].strip().replace(",", ""))


class GSM8KPAL(Task):
    """GSM8K test (1,319 problems), PAL style: the generated solution() is run and its value compared."""

    name = "gsm8k-pal"
    stop = ("\n\n\n", "\nQ:", "\ndef ", "\nif __name__")
    max_new_tokens = 384
    files = ("code/gsm8k/test.jsonl",)
    timeout = 10.0

    def read(self, paths: list[Path]) -> list[Problem]:
        shots = "".join(f"{_question(q)}{body}\n\n\n" for q, body in _SHOTS)
        out = []
        for i, r in enumerate(read_jsonl_any(paths[0])):
            value = parse_answer(r["answer"])
            out.append(Problem(f"GSM8K/{i}", shots + _question(r["question"]),
                               reference=f"    return {value!r}\n", meta={"value": value}))
        return out

    def postprocess(self, problem: Problem, generation: str) -> str:
        body = super().postprocess(problem, generation)
        return re.sub(r"\n+$", "\n", body)

    def program(self, problem: Problem, completion: str) -> Program:
        src = (f"def solution():\n{completion}\n"
               f"_dfm_got = float(solution())\n"
               f"assert abs(_dfm_got - {problem.meta['value']!r}) < 1e-4, f'got {{_dfm_got}}'\n")
        return python_program(src, self.timeout)

    def exact_match(self, problem: Problem, completion: str) -> bool | None:
        return None
