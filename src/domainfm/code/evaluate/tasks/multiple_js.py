"""MultiPL-E JavaScript (Cassano et al. 2023): HumanEval translated to JS, "reworded" prompts, run by node.

The tests are embedded in the data (`tests`: a Node `assert` program ending in `test()`). MultiPL-E ships no
reference solutions; the soundness tests use a few hand-written ones.
"""

from __future__ import annotations

from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, read_jsonl_any

JS_STOP = ("\nfunction ", "\n/*", "\n//", "\nconsole.log")


class MultiPLEJS(Task):
    """MultiPL-E HumanEval-JS (reworded), 161 problems, executed with Node.js."""

    name = "multiple-js"
    language = "javascript"
    stop = JS_STOP
    files = ("code/multipl-e/humaneval-js-reworded.jsonl",)
    timeout = 15.0  # node starts slower than python

    def read(self, paths: list[Path]) -> list[Problem]:
        rows = read_jsonl_any(paths[0])
        return [Problem(r["name"], r["prompt"], meta={"tests": r["tests"], "stop": r.get("stop_tokens")})
                for r in rows]

    def postprocess(self, problem: Problem, generation: str) -> str:
        from domainfm.code.evaluate.tasks.base import truncate_at_stop

        return truncate_at_stop(generation, tuple(problem.meta.get("stop") or self.stop))

    def program(self, problem: Problem, completion: str) -> Program:
        return Program("javascript", f"{problem.prompt}{completion}\n\n{problem.meta['tests']}\n",
                       timeout=self.timeout)
