"""MultiPL-E as the references run it: every installed language builds, runs and judges the real data the
way MultiPL-E's `eval_<lang>.py` does; languages without a runtime are reported as skipped, with the reason.

MultiPL-E ships no reference solutions, so each language gets a hand-written right and wrong completion of
`HumanEval_53_add` (relative to the unstripped prompt, as MultiPL-E's completion files are).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.code.evaluate.harness import EvalConfig, check_completions, evaluate
from domainfm.code.evaluate.languages import LANGUAGES, judge_go, judge_perl, judge_php
from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.code.evaluate.tasks import TASKS, expand_task_names, get_task

# (right, wrong) completions of HumanEval_53_add, per MultiPL-E language
ADD = {
    "cpp": ("    return x + y;\n", "    return x - y;\n"),
    "java": ("        return x + y;\n", "        return x - y;\n"),
    "go": ("    return x + y\n}\n\n", "    return x - y\n}\n\n"),
    "rs": ("    x + y\n", "    x - y\n"),
    "sh": ("    echo $(( $1 + $2 ))\n", "    echo $(( $1 - $2 ))\n"),
    "lua": ("    return x + y\nend\n", "    return x - y\nend\n"),
    "rb": ("  x + y\nend\n", "  x - y\nend\n"),
    "php": ("    return $x + $y;\n}\n", "    return $x - $y;\n}\n"),
    "ts": ("    return x + y;\n}\n", "    return x - y;\n}\n"),
    "pl": ("    return $x + $y;\n}\n", "    return $x - $y;\n}\n"),
    "r": ("    x + y\n}\n", "    x - y\n}\n"),
    "d": ("{\n    return x + y;\n}\n", "{\n    return x - y;\n}\n"),
    "js": ("    return x + y;\n}\n", "    return x - y;\n}\n"),
    "scala": ("        x + y\n", "        x - y\n"),
}
# the languages scripts/bootstrap.sh installs runtimes for, and the ones it reports as skipped
INSTALLED = set(ADD)
SKIPPED = {"jl": "julia", "swift": "swift"}


def test_every_multiple_language_is_run_or_skipped_with_reason() -> None:
    names = expand_task_names(["multiple"])
    assert set(names) == {f"multiple-{e}" for e in (*INSTALLED, *SKIPPED)} and len(names) == 16
    for ext in INSTALLED:  # fails (does not skip) on a machine where bootstrap's runtimes are missing
        assert get_task(f"multiple-{ext}").unavailable() is None, ext
    for ext, runtime in SKIPPED.items():
        why = get_task(f"multiple-{ext}").unavailable()
        assert why and why.startswith(f"runtime {runtime} not installed"), why


@pytest.mark.slow  # 28 compiles/runs in 14 toolchains (C++, TypeScript and Scala builds take seconds each)
def test_right_and_wrong_completions_in_every_installed_language(data_dir: Path, sandbox: Sandbox) -> None:
    pairs, labels = [], []
    for ext, (good, bad) in ADD.items():
        task = get_task(f"multiple-{ext}")
        p = task.as_samples_problem({q.task_id: q for q in task.load(data_dir).problems}["HumanEval_53_add"])
        for ok, c in ((True, good), (False, bad)):
            pairs.append((task, p, c))
            labels.append((ext, ok))
    programs = [t.program(p, c) for t, p, c in pairs]
    results = sandbox.run_many(programs, workers=4)
    got = {lab: r.passed for lab, r in zip(labels, results, strict=True)}
    assert got == {lab: lab[1] for lab in labels}, {lab: r.result for lab, r in zip(labels, results, strict=True)}
    # a build failure is MultiPL-E's "SyntaxError", a failed test its "Exception"
    wrong = dict(zip(labels, results, strict=True))
    assert wrong[("cpp", False)].detail.startswith("Exception")
    task = get_task("multiple-rs")
    p = task.as_samples_problem({q.task_id: q for q in task.load(data_dir).problems}["HumanEval_53_add"])
    (res,) = check_completions(task, [(p, "    x + y +\n")], sandbox)
    assert not res.passed and res.detail.startswith("SyntaxError")


def test_generated_completions_use_the_stripped_prompt_and_stop_tokens(data_dir: Path, sandbox: Sandbox) -> None:
    task = get_task("multiple-lua")
    p = {q.task_id: q for q in task.load(data_dir).problems}["HumanEval_53_add"]
    raw = json.loads(next(ln for ln in (data_dir / "code/multipl-e/humaneval-lua-reworded.jsonl").open()
                          if '"HumanEval_53_add"' in ln))
    assert p.prompt == raw["prompt"].strip()  # bigcode's multiple task prompts with doc["prompt"].strip()
    assert task.stop == (*raw["stop_tokens"], "<file_sep>")
    gen = "\n    return x + y\nend\n\nlocal function extra()\n    return 1\nend\n"
    completion = task.postprocess(p, gen)
    assert completion == "\n    return x + y\nend"  # cut at "\n\n" (MultiPL-E's Lua stop token)
    (res,) = check_completions(task, [(p, completion)], sandbox)
    assert res.passed, res.result


def test_skipped_language_is_reported_not_dropped(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"task_id": "HumanEval_53_add", "completion": "  x + y\n}\n"}) + "\n")
    res = evaluate(EvalConfig(tasks=["multiple-swift"], samples=str(f), output=str(tmp_path / "o")))
    assert res["multiple-swift"] == {"skipped": SKIPPED_REASON("swift")}
    assert res["metadata"]["tasks"]["multiple-swift"]["skipped"].startswith("runtime swift not installed")
    assert "| multiple-swift | skipped: runtime swift not installed" in (tmp_path / "o/results.md").read_text()


def SKIPPED_REASON(lang: str) -> str:  # noqa: N802 - reads like the constant it looks up
    return LANGUAGES.get(lang).missing() or ""


def test_multiple_e_status_rules() -> None:
    """The stdout rules of MultiPL-E's eval_go.py / eval_php.py / eval_pl.py (exit code alone is not enough)."""
    assert judge_go(0, "--- FAIL: TestAdd (0.00s)\nFAIL\n", "").ok is False
    assert judge_go(1, "# command-line-arguments [build failed]\n", "").detail.startswith("SyntaxError")
    assert judge_go(0, "ok  \tcommand-line-arguments\t0.002s\n", "").ok
    assert judge_php(0, "PHP Parse error: syntax error", "").detail.startswith("SyntaxError")
    assert judge_perl(0, "ok!ok!ERROR: not equal", "").ok is False
    assert judge_perl(0, "ok!ok!", "").ok


def test_registry_names_match_bigcode() -> None:
    assert {n for n in TASKS.names() if n.startswith("multiple-")} == {
        "multiple-" + e for e in ("cpp", "java", "go", "rs", "sh", "lua", "rb", "php", "ts", "pl", "r", "d",
                                  "jl", "swift", "scala", "js")}
