"""Fill-in-the-middle on HumanEval.

- `humaneval-fim-single-line`, `-multi-line`, `-random-span`, `-random-span-light`: OpenAI's
  HumanEval-infilling (Bavarian et al. 2022). The model writes the middle between `prompt` (prefix) and
  `suffix`; scored by execution (prefix + middle + suffix + the HumanEval tests), exact match is reported too.
- `fim-humaneval-py`: MultiPL-E's single-line FIM set (the SantaCoder FIM task): every non-blank line of each
  solution body is masked in turn; scored by exact match of the line (no tests).
"""

from __future__ import annotations

import json
from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any


def _first_line(text: str) -> str:
    """Keep the first line of a generated middle (with its newline: the suffix starts a new line)."""
    i = text.find("\n")
    return text[: i + 1] if i != -1 else text + "\n"


class HumanEvalInfilling(Task):
    """HumanEval infilling, single line (1,033 problems): execution + exact match."""

    name = "humaneval-fim-single-line"
    mode = "infill"
    files = ("code/humaneval-infilling/HumanEval-SingleLineInfilling.jsonl.gz",)
    max_new_tokens = 128
    timeout = 10.0
    single_line = True

    def read(self, paths: list[Path]) -> list[Problem]:
        return [Problem(r["task_id"], r["prompt"], suffix=r["suffix"], reference=r["canonical_solution"],
                        meta={"test": r["test"], "entry_point": r["entry_point"]})
                for r in read_jsonl_any(paths[0])]

    def postprocess(self, problem: Problem, generation: str) -> str:
        return _first_line(generation) if self.single_line else generation

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        src = f"{problem.prompt}{completion}{problem.suffix}\n{m['test']}\ncheck({m['entry_point']})\n"
        return python_program(src, self.timeout)


class HumanEvalInfillingMulti(HumanEvalInfilling):
    """HumanEval infilling, multi line (5,815 problems): execution + exact match."""

    name = "humaneval-fim-multi-line"
    files = ("code/humaneval-infilling/HumanEval-MultiLineInfilling.jsonl.gz",)
    max_new_tokens = 256
    single_line = False


class HumanEvalInfillingSpan(HumanEvalInfillingMulti):
    """HumanEval infilling, random span (1,640 problems): execution + exact match."""

    name = "humaneval-fim-random-span"
    files = ("code/humaneval-infilling/HumanEval-RandomSpanInfilling.jsonl.gz",)


class HumanEvalInfillingSpanLight(HumanEvalInfillingMulti):
    """HumanEval infilling, random span light (164 problems, one per function): execution + exact match."""

    name = "humaneval-fim-random-span-light"
    files = ("code/humaneval-infilling/HumanEval-RandomSpanInfillingLight.jsonl.gz",)


class MultiPLEFimPy(Task):
    """MultiPL-E single-line FIM on HumanEval-py (1,141 masked lines): exact match, no tests."""

    name = "fim-humaneval-py"
    mode = "infill"
    metric = "exact_match"
    files = ("code/multipl-e/fim-humaneval-py.json",)
    max_new_tokens = 64

    def read(self, paths: list[Path]) -> list[Problem]:
        from domainfm.core.errors import UserError

        try:
            rows = json.loads(paths[0].read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{paths[0]}: not valid JSON ({exc.msg})") from None
        out = []
        for pi, r in enumerate(rows):
            body = r["body"]
            for li, line in enumerate(body):
                if not line.strip():
                    continue
                prefix = r["prompt"] + "".join(x + "\n" for x in body[:li])
                suffix = "\n" + "\n".join(body[li + 1:])
                out.append(Problem(f"FIM-HumanEval-py/{pi}/L{li}", prefix, suffix=suffix, reference=line))
        return out

    def postprocess(self, problem: Problem, generation: str) -> str:
        return generation.split("\n", 1)[0]

    def exact_match(self, problem: Problem, completion: str) -> bool | None:
        return completion.strip() == (problem.reference or "").strip()
