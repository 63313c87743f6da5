"""EvalPlus (Liu et al. 2023): HumanEval+ and MBPP+, many more test inputs per problem.

Checking follows EvalPlus: the expected output of every input (base + plus) is the canonical solution's
output, and the candidate must match it (floats within `atol`/relative 1e-7, everything else by ==) within
a per-input time limit of 4x the canonical solution's time on that input (at least 1 s), measured in the
same sandbox run, so a loaded machine slows both alike. The whole program also has a wall-clock limit. Both
functions run inside the same sandbox, each on a deep copy of the input, so neither can see the other's
mutations. Data files: `$DOMAINFM_DATA/code/humaneval-plus/...` (HumanEval+ v0.1.10, its Mini variant, and
the MBPP+ snapshot described in the data README).
"""

from __future__ import annotations

import json
from pathlib import Path

from domainfm.code.evaluate.sandbox import Program
from domainfm.code.evaluate.tasks.base import Problem, Task, python_program, read_jsonl_any
from domainfm.code.evaluate.tasks.humaneval import HUMANEVAL_STOP
from domainfm.code.evaluate.tasks.mbpp import MBPP_STOP

_CHECKER = '''
import copy as _dfm_copy, json as _dfm_json, math as _dfm_math, signal as _dfm_signal, time as _dfm_time
_dfm_cand = {entry}
_dfm_ns = {{}}
exec(compile({reference!r}, "<reference>", "exec"), _dfm_ns)
_dfm_ref = _dfm_ns[{entry!r}]
_dfm_atol = {atol!r}

def _dfm_close(a, b):
    if isinstance(b, float) or isinstance(a, float):
        if not isinstance(a, (int, float)) or isinstance(a, bool) != isinstance(b, bool):
            return False
        if _dfm_math.isnan(b):
            return _dfm_math.isnan(a)
        return _dfm_math.isclose(a, b, rel_tol=1e-07, abs_tol=_dfm_atol)
    if isinstance(b, (list, tuple)) and b and all(isinstance(x, float) for x in b):
        return (isinstance(a, (list, tuple)) and len(a) == len(b)
                and all(_dfm_close(x, y) for x, y in zip(a, b)))
    return a == b

class _DfmTimeLimit(BaseException):  # not an Exception: a candidate's `except Exception` cannot swallow it
    pass

def _dfm_alarm(signum, frame):
    raise _DfmTimeLimit()

_dfm_signal.signal(_dfm_signal.SIGALRM, _dfm_alarm)
for _dfm_i, _dfm_x in enumerate(_dfm_json.loads({inputs!r})):
    _dfm_t0 = _dfm_time.perf_counter()
    _dfm_exp = _dfm_ref(*_dfm_copy.deepcopy(_dfm_x))
    # EvalPlus's per-input limit: 4x the canonical solution's time on the same machine, at least 1 s
    _dfm_budget = max(1.0, 4.0 * (_dfm_time.perf_counter() - _dfm_t0))
    _dfm_signal.setitimer(_dfm_signal.ITIMER_REAL, _dfm_budget)
    try:
        _dfm_got = _dfm_cand(*_dfm_copy.deepcopy(_dfm_x))
    except _DfmTimeLimit:
        raise AssertionError(f"time limit ({{_dfm_budget:.2f}} s) exceeded on input #{{_dfm_i}}") from None
    finally:
        _dfm_signal.setitimer(_dfm_signal.ITIMER_REAL, 0)
    assert _dfm_close(_dfm_got, _dfm_exp), f"wrong output on input #{{_dfm_i}}"
'''


def checker(entry: str, reference: str, inputs: list, atol: float) -> str:
    return _CHECKER.format(entry=entry, reference=reference, atol=float(atol or 0.0),
                           inputs=json.dumps(inputs))


class HumanEvalPlus(Task):
    """HumanEval+ v0.1.10: HumanEval prompts, tests = base + plus inputs checked against the canonical."""

    name = "humaneval-plus"
    stop = HUMANEVAL_STOP
    files = ("code/humaneval-plus/HumanEvalPlus.jsonl.gz",)
    timeout = 300.0  # the per-input limits stop slow candidates early; this bounds the whole run

    def read(self, paths: list[Path]) -> list[Problem]:
        out = []
        for r in read_jsonl_any(paths[0]):
            out.append(Problem(r["task_id"], r["prompt"], reference=r["canonical_solution"],
                               meta={"entry_point": r["entry_point"], "atol": r.get("atol") or 0.0,
                                     "inputs": list(r["base_input"]) + list(r.get("plus_input") or []),
                                     "ref_src": r["prompt"] + r["canonical_solution"]}))
        return out

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        src = problem.prompt + completion + "\n" + checker(m["entry_point"], m["ref_src"], m["inputs"], m["atol"])
        return python_program(src, self.timeout)


class HumanEvalPlusMini(HumanEvalPlus):
    """HumanEval+ Mini v0.1.10: the same problems with a reduced set of plus inputs (fast)."""

    name = "humaneval-plus-mini"
    files = ("code/humaneval-plus/HumanEvalPlus-Mini.jsonl.gz",)
    timeout = 120.0


class MBPPPlus(Task):
    """MBPP+ (399 problems): MBPP-style docstring prompt, tests = base + plus inputs vs the canonical."""

    name = "mbpp-plus"
    stop = MBPP_STOP
    files = ("code/humaneval-plus/MbppPlus.jsonl",)
    timeout = 300.0

    def read(self, paths: list[Path]) -> list[Problem]:
        out = []
        for r in read_jsonl_any(paths[0]):
            text = r["prompt"].strip().strip("'\"").strip()
            first_assert = next((ln for ln in (r.get("assertion") or "").splitlines()
                                 if ln.strip().startswith("assert")), "")
            prompt = f'"""\n{text}\n{first_assert.strip()}\n"""\n'
            out.append(Problem(r["task_id"], prompt, reference=r["canonical_solution"],
                               meta={"entry_point": r["entry_point"], "atol": r.get("atol") or 0.0,
                                     "inputs": list(r["base_input"]) + list(r.get("plus_input") or []),
                                     "ref_src": r["canonical_solution"]}))
        return out

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        src = problem.prompt + completion + "\n" + checker(m["entry_point"], m["ref_src"], m["inputs"], m["atol"])
        return python_program(src, self.timeout)
