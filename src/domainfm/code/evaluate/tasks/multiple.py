"""MultiPL-E (Cassano et al. 2023): HumanEval translated to 16 languages, "reworded" prompts, as StarCoder2
reports it. One task per language (`multiple-<ext>`, the bigcode harness's names), all from
`$DOMAINFM_DATA/code/multipl-e/humaneval-<ext>-reworded.jsonl`.

Prompt, stop words and program follow the bigcode harness's `multiple` task: the prompt is
`doc["prompt"].strip()`, generation stops at the file's `stop_tokens` (+ `<file_sep>`), and the program run
is `prompt + completion + "\\n" + tests` (the tests are embedded in the data). Completions read from a
samples file are, as in MultiPL-E's own completion files, relative to the unstripped prompt. Each language
is built, run and judged by MultiPL-E's recipe for it (`languages.py`); a language whose runtime is not
installed is reported as skipped with the reason. MultiPL-E ships no reference solutions.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from domainfm.code.evaluate.languages import get_language
from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, read_jsonl_any, truncate_at_stop

# file extension (bigcode/MultiPL-E name) -> language in `languages.LANGUAGES`
MULTIPLE_LANGUAGES = {
    "cpp": "cpp", "java": "java", "go": "go", "rs": "rust", "sh": "bash", "lua": "lua", "rb": "ruby",
    "php": "php", "ts": "typescript", "pl": "perl", "r": "r", "d": "d", "jl": "julia", "swift": "swift",
    "scala": "scala", "js": "javascript",
}


class MultiPLE(Task):
    """Base class of the per-language MultiPL-E tasks (not registered itself)."""

    ext: ClassVar[str] = ""
    max_new_tokens = 512

    def read(self, paths: list[Path]) -> list[Problem]:
        out = []
        rows = read_jsonl_any(paths[0])
        if rows:  # every problem of a language has the same stop tokens; the generator gets them (+ bigcode's)
            self.stop = (*rows[0]["stop_tokens"], "<file_sep>")
        for r in rows:
            out.append(Problem(r["name"], r["prompt"].strip(),
                               meta={"tests": r["tests"], "stop": [*r["stop_tokens"], "<file_sep>"],
                                     "raw_prompt": r["prompt"]}))
        return out

    def unavailable(self) -> str | None:
        return get_language(self.language).missing()

    def postprocess(self, problem: Problem, generation: str) -> str:
        return truncate_at_stop(generation, tuple(problem.meta["stop"]))

    def program(self, problem: Problem, completion: str) -> Program:
        return Program(self.language, f"{problem.prompt}{completion}\n{problem.meta['tests']}",
                       timeout=self.timeout)


def _make(ext: str) -> type[MultiPLE]:
    lang = get_language(MULTIPLE_LANGUAGES[ext])
    attrs = {
        "name": f"multiple-{ext}", "ext": ext, "language": lang.name, "timeout": lang.timeout,
        "files": (f"code/multipl-e/humaneval-{ext}-reworded.jsonl",),
        "stop": ("<file_sep>",), "__doc__": f"MultiPL-E HumanEval-{ext} (reworded), run with {lang.name} as MultiPL-E does.",
    }
    return type(f"MultiPLE_{ext}", (MultiPLE,), attrs)


MULTIPLE_TASKS: dict[str, type[MultiPLE]] = {f"multiple-{e}": _make(e) for e in MULTIPLE_LANGUAGES}
