"""EvalPlus (Liu et al. 2023): HumanEval+ and MBPP+, many more test inputs per problem, checked as EvalPlus does.

1. Expected outputs are computed ahead, once per problem, by running the canonical solution on every input
   (base + plus) in its own sandboxed program (`prepare`), which also records its time per input: no
   candidate code exists in that process, so nothing a candidate does (patching `json`, builtins, ...) can
   change the expected outputs.
2. A candidate program holds only the candidate and the inputs. It calls the function on a deep copy of
   each input under EvalPlus's per-input time limit (max(1 s, 4 x the canonical time on that input)), with
   prints going to /dev/null (EvalPlus swallows I/O), and reports each output as a framed pickle on its
   real stdout; it stops at the first error or time-out. Its whole run is limited to
   min(60 s, sum of the per-input limits) + 1 s, EvalPlus's per-task timeout.
3. The harness (`judge`) reads those outputs with a plain-data unpickler and compares them with the expected
   ones by EvalPlus's rules (`evalplus_check.py`: float atol, `is_floats`, the special oracles).

Data files: `$DOMAINFM_DATA/code/humaneval-plus/...` (HumanEval+ v0.1.10, its Mini variant, and the MBPP+
snapshot described in the data README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domainfm.code.evaluate.sandbox import ExecResult, Program
from domainfm.code.evaluate.tasks.base import Problem, Task, read_jsonl_any
from domainfm.code.evaluate.tasks.evalplus_check import (
    MBPP_OUTPUT_NOT_NONE_TASKS,
    Digest,
    compare,
    read_frames,
)
from domainfm.code.evaluate.tasks.humaneval import HUMANEVAL_STOP, stripped_problem
from domainfm.code.evaluate.tasks.mbpp import MBPP_STOP

# EvalPlus's defaults (evalplus.eval: DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT) and per-task cap
GT_TIME_LIMIT_FACTOR = 4.0
MIN_TIME_LIMIT = 1.0
TIMEOUT_PER_TASK = 60.0
REFERENCE_TIMEOUT = 600.0  # the canonical run itself (a few MBPP+ references are slow on big inputs)
OUTPUT_BYTES = 64 << 20  # reported outputs of one program (some HumanEval+ problems have large outputs)
# An expected output whose pickle exceeds this is kept as a SHA-256 of the pickle, and the candidate reports the
# digest of its own output for that input (exact comparison of the pickled value; only MBPP+'s Mbpp/255,
# 360 MB of combinations over 112 inputs, has such outputs). EvalPlus compares them in memory.
BIG_OUTPUT = 1 << 20

# shared by the reference and the candidate programs: the output channel and MBPP+'s input types
_PRELUDE = '''
import copy as _dfm_copy, hashlib as _dfm_hashlib, json as _dfm_json, os as _dfm_os, pickle as _dfm_pickle
import signal as _dfm_signal, struct as _dfm_struct, time as _dfm_time
_dfm_chan = _dfm_os.fdopen(_dfm_os.dup(1), "wb")  # the real stdout carries the outputs, nothing else
_dfm_os.dup2(_dfm_os.open("/dev/null", _dfm_os.O_WRONLY), 1)  # the program's own prints go nowhere

def _dfm_emit(record):
    data = _dfm_pickle.dumps(record, protocol=4)
    _dfm_chan.write(_dfm_struct.pack(">I", len(data)) + data)
    _dfm_chan.flush()

def _dfm_digest(value):
    return _dfm_hashlib.sha256(_dfm_pickle.dumps(value, protocol=4)).hexdigest()

'''
_CONVERT = '''
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
        return [[set(b) if isinstance(b, list) and b else {} for b in x[0]]]
    if kind == "float_complex":
        return [float(x[0]), complex(x[1])]
    if kind == "complex":
        return [complex(x[0])]
    if kind == "nested_then_tuple":
        return [tuple(tuple(b) for b in a) for a in x]
    if kind == "t278":
        return [tuple(tuple(b) if isinstance(b, list) else b for b in x[0])]
    if kind == "dict_values_tuple":
        return [{k: tuple(v) for k, v in x[0].items()}, *x[1:]]
    if kind == "all_tuples":
        return [_dfm_tuples(a) for a in x]
    return x

'''

_REFERENCE_RUN = '''
_dfm_ns = {{}}
exec(compile({reference!r}, "<reference>", "exec"), _dfm_ns)
_dfm_fn = _dfm_ns[{entry!r}]
for _dfm_i, _dfm_x in enumerate(_dfm_json.loads({inputs!r})):
    _dfm_x = _dfm_convert({kind!r}, _dfm_x)
    _dfm_t0 = _dfm_time.perf_counter()
    try:
        _dfm_y = _dfm_fn(*_dfm_copy.deepcopy(_dfm_x))
    except BaseException as _dfm_e:
        _dfm_emit(("error", _dfm_i, repr(_dfm_e)[:300]))
        raise SystemExit(1)
    _dfm_dt = _dfm_time.perf_counter() - _dfm_t0
    if {not_none!r}:  # EvalPlus keeps only "found / not found" for regex-match answers
        _dfm_y = _dfm_y is not None
    _dfm_data = _dfm_pickle.dumps(_dfm_y, protocol=4)
    if len(_dfm_data) > {big}:  # a huge output is kept as its digest (see BIG_OUTPUT)
        _dfm_emit(("digest", _dfm_i, _dfm_hashlib.sha256(_dfm_data).hexdigest(), _dfm_dt))
    else:
        _dfm_emit(("ok", _dfm_i, _dfm_y, _dfm_dt))
'''

_CANDIDATE_RUN = '''
class _DfmTimeLimit(BaseException):  # not an Exception: a candidate's `except Exception` cannot swallow it
    pass

def _dfm_alarm(signum, frame):
    raise _DfmTimeLimit()

_dfm_signal.signal(_dfm_signal.SIGALRM, _dfm_alarm)
_dfm_fn = {entry}
_dfm_budgets = {budgets!r}
for _dfm_i, _dfm_x in enumerate(_dfm_json.loads({inputs!r})):
    _dfm_x = _dfm_convert({kind!r}, _dfm_x)
    _dfm_signal.setitimer(_dfm_signal.ITIMER_REAL, _dfm_budgets[_dfm_i])
    try:
        _dfm_y = _dfm_fn(*_dfm_copy.deepcopy(_dfm_x))
    except _DfmTimeLimit:
        _dfm_emit(("timeout", _dfm_i))
        break
    except BaseException as _dfm_e:
        _dfm_emit(("error", _dfm_i, type(_dfm_e).__name__))
        break
    finally:
        _dfm_signal.setitimer(_dfm_signal.ITIMER_REAL, 0)
    if {not_none!r} and not isinstance(_dfm_y, bool):
        _dfm_y = _dfm_y is not None
    try:
        if _dfm_i in {digests!r}:
            _dfm_emit(("digest", _dfm_i, _dfm_digest(_dfm_y)))
        else:
            _dfm_emit(("ok", _dfm_i, _dfm_y))
    except Exception:
        _dfm_emit(("unpicklable", _dfm_i, type(_dfm_y).__name__))
        break
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




def _kind(task_id: str) -> str:
    return _KIND_OF.get(int(task_id.split("/")[-1]), "") if task_id.startswith("Mbpp/") else ""


class _EvalPlusTask(Task):
    """Shared machinery of HumanEval+ and MBPP+ (see the module docstring)."""

    dataset = "humaneval"

    def _expected(self) -> dict[str, Any]:
        if not hasattr(self, "_cache"):
            self._cache: dict[str, Any] = {}
        return self._cache

    def _not_none(self, problem: Problem) -> bool:
        return self.dataset == "mbpp" and problem.meta["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS

    def reference_program(self, problem: Problem) -> Program:
        m = problem.meta
        src = _PRELUDE + _CONVERT + _REFERENCE_RUN.format(
            reference=m["ref_src"], entry=m["entry_point"], inputs=json.dumps(m["inputs"]),
            kind=_kind(problem.task_id), not_none=self._not_none(problem), big=BIG_OUTPUT)
        return Program("python", src, timeout=REFERENCE_TIMEOUT, keep_stdout=True, output_bytes=OUTPUT_BYTES)

    def prepare(self, problems: list[Problem], sandbox: Any, workers: int) -> None:
        """Run each canonical solution once, in its own sandboxed program: expected outputs + times."""
        cache = self._expected()
        todo = [p for p in problems if p.task_id not in cache]
        if not todo:
            return
        results = sandbox.run_many([self.reference_program(p) for p in todo], workers=workers)
        for p, res in zip(todo, results, strict=True):
            frames = read_frames(res.stdout)
            n = len(p.meta["inputs"])
            if res.passed and len(frames) == n and all(f[0] in ("ok", "digest") for f in frames):
                cache[p.task_id] = ([Digest(f[2]) if f[0] == "digest" else f[2] for f in frames],
                                    [f[3] for f in frames])
            else:
                why = next((f[2] for f in frames if f[0] == "error"), None) or res.result
                cache[p.task_id] = f"the reference solution failed: {why}"

    def program(self, problem: Problem, completion: str) -> Program:
        m = problem.meta
        exp = self._expected().get(problem.task_id)
        times = exp[1] if isinstance(exp, tuple) else [0.0] * len(m["inputs"])
        budgets = [max(MIN_TIME_LIMIT, GT_TIME_LIMIT_FACTOR * t) for t in times]
        digests = {i for i, v in enumerate(exp[0]) if isinstance(v, Digest)} if isinstance(exp, tuple) else set()
        src = (_PRELUDE + _CONVERT + problem.prompt + completion + "\n"
               + _CANDIDATE_RUN.format(entry=m["entry_point"], budgets=budgets, inputs=json.dumps(m["inputs"]),
                                       kind=_kind(problem.task_id), not_none=self._not_none(problem),
                                       digests=digests))
        timeout = min(TIMEOUT_PER_TASK, sum(budgets)) + 1.0 + 2.0  # + interpreter start-up
        return Program("python", src, timeout=timeout, keep_stdout=True, output_bytes=OUTPUT_BYTES)

    def judge(self, problem: Problem, completion: str, result: ExecResult) -> ExecResult:
        exp = self._expected().get(problem.task_id)
        if exp is None:
            return ExecResult("failed", "expected outputs were not prepared (call prepare first)")
        if isinstance(exp, str):
            return ExecResult("failed", exp)
        if result.status == "timed out":
            return result
        frames = read_frames(result.stdout)
        m = problem.meta
        n = len(m["inputs"])
        for f in frames:
            if f[0] == "timeout":
                budget = max(MIN_TIME_LIMIT, GT_TIME_LIMIT_FACTOR * exp[1][f[1]])
                return ExecResult("failed", f"time limit ({budget:.2f} s) exceeded on input #{f[1]}")
            if f[0] == "error":
                return ExecResult("failed", f"{f[2]} on input #{f[1]}")
            if f[0] not in ("ok", "digest"):
                return ExecResult("failed", f"output that is not plain data on input #{len(frames) - 1}")
        outputs = [Digest(f[2]) if f[0] == "digest" and isinstance(f[2], str) else f[2] for f in frames]
        if len(outputs) != n or [f[1] for f in frames] != list(range(n)):
            return ExecResult("failed", result.detail if not result.passed else
                              f"the program reported {len(outputs)} outputs for {n} inputs")
        why = compare(self.dataset, m["entry_point"], m["inputs"], exp[0], outputs, m["atol"])
        if why:
            return ExecResult("failed", why)
        if not result.passed:  # every output right, but the program then failed (e.g. exit code)
            return result
        return ExecResult("passed", returncode=result.returncode, seconds=result.seconds)


class HumanEvalPlus(_EvalPlusTask):
    """HumanEval+ v0.1.10: HumanEval prompts, tests = base + plus inputs checked against the canonical."""

    name = "humaneval-plus"
    stop = HUMANEVAL_STOP
    files = ("code/humaneval-plus/HumanEvalPlus.jsonl.gz",)
    timeout = TIMEOUT_PER_TASK + 3.0

    def read(self, paths: list[Path]) -> list[Problem]:
        out = []
        for r in read_jsonl_any(paths[0]):
            # prompted as bigcode's humanevalplus task does (prompt.strip()); the canonical solution is the oracle
            out.append(stripped_problem(r, {
                "entry_point": r["entry_point"], "atol": r.get("atol") or 0.0,
                "inputs": list(r["base_input"]) + list(r.get("plus_input") or []),
                "ref_src": r["prompt"] + r["canonical_solution"]}))
        return out


class HumanEvalPlusMini(HumanEvalPlus):
    """HumanEval+ Mini v0.1.10: the same problems with a reduced set of plus inputs (fast)."""

    name = "humaneval-plus-mini"
    files = ("code/humaneval-plus/HumanEvalPlus-Mini.jsonl.gz",)


class MBPPPlus(_EvalPlusTask):
    """MBPP+ (399 problems): MBPP-style docstring prompt, tests = base + plus inputs vs the canonical."""

    name = "mbpp-plus"
    dataset = "mbpp"
    stop = MBPP_STOP
    files = ("code/humaneval-plus/MbppPlus.jsonl",)
    timeout = TIMEOUT_PER_TASK + 3.0

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
