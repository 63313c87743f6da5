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
def _dfm_tuples(v):
    return tuple(_dfm_tuples(x) for x in v) if isinstance(v, list) else v

def _dfm_convert(kind, x):
    # MBPP+ stores tuples, sets and complex numbers as JSON lists / strings; restore the argument types
    if kind == "each_arg_tuple":
        return [tuple(a) for a in x]
    if kind == "each_arg_list_of_tuples":
        return [[tuple(b) for b in a] for a in x]
    if kind == "first_list_of_tuples":
        return [[tuple(b) for b in x[0]], *x[1:]]
    if kind == "second_tuple":
        return [x[0], tuple(x[1]), *x[2:]]
    if kind == "first_tuple":
        return [tuple(x[0]), *x[1:]]
    if kind == "sets":
        return [[set(b) if isinstance(b, list) and b else {{}} for b in x[0]]]
    if kind == "float_complex":
        return [float(x[0]), complex(x[1])]
    if kind == "complex":
        return [complex(x[0])]
    if kind == "nested_then_tuple":
        return [tuple(tuple(b) for b in a) for a in x]
    if kind == "t278":
        return [tuple(tuple(b) if isinstance(b, list) else b for b in x[0])]
    if kind == "dict_values_tuple":
        return [{{k: tuple(v) for k, v in x[0].items()}}, *x[1:]]
    if kind == "all_tuples":
        return [_dfm_tuples(a) for a in x]
    return x

_dfm_kind = {kind!r}
_dfm_oracle = {oracle!r}
for _dfm_i, _dfm_x in enumerate(_dfm_json.loads({inputs!r})):
    _dfm_x = _dfm_convert(_dfm_kind, _dfm_x)
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
    if _dfm_oracle == "not_none":  # the output is a regex match: only found / not found is compared
        _dfm_got, _dfm_exp = _dfm_got is not None, _dfm_exp is not None
    elif _dfm_oracle == "set":  # any order of the elements is right
        _dfm_got, _dfm_exp = set(_dfm_got), set(_dfm_exp)
    assert _dfm_close(_dfm_got, _dfm_exp), f"wrong output on input #{{_dfm_i}}"
'''


# MBPP+ argument types that JSON cannot hold, by task number (the facts of EvalPlus's input deserialiser)
_MBPP_KINDS: dict[str, tuple[int, ...]] = {
    "each_arg_tuple": (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630,
                       726, 740, 744, 809),
    "each_arg_list_of_tuples": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
    "first_list_of_tuples": (75, 413, 444, 753),
    "second_tuple": (106, 750),
    "sets": (115,),
    "float_complex": (124,),
    "first_tuple": (250, 405, 446, 617, 720, 763, 808, 307),
    "nested_then_tuple": (259, 401, 445),
    "t278": (278,),
    "dict_values_tuple": (722,),
    "complex": (252,),
    "all_tuples": (580, 615, 791),
}
_KIND_OF = {n: k for k, ns in _MBPP_KINDS.items() for n in ns}
# EvalPlus's special output checks for MBPP+ (by entry point)
_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}
_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
           "intersection_array", "find_dissimilar", "Diff"}


def checker(entry: str, reference: str, inputs: list, atol: float, task_id: str = "") -> str:
    kind = _KIND_OF.get(int(task_id.split("/")[-1]), "") if task_id.startswith("Mbpp/") else ""
    oracle = ""
    if task_id.startswith("Mbpp/"):
        oracle = "not_none" if entry in _NOT_NONE else ("set" if entry in _SET_EQ else "")
    return _CHECKER.format(entry=entry, reference=reference, atol=float(atol or 0.0),
                           inputs=json.dumps(inputs), kind=kind, oracle=oracle)


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
        src = problem.prompt + completion + "\n" + checker(m["entry_point"], m["ref_src"], m["inputs"], m["atol"],
                                                        problem.task_id)
        return python_program(src, self.timeout)
