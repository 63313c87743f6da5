"""EvalPlus's output comparison, done in the harness (never inside the candidate's process).

The candidate program only *reports* its outputs (framed pickles on its stdout); this module reads them with
an unpickler that can build nothing but plain data, and compares them with the expected outputs that a
separate sandboxed run of the reference solution produced. A candidate can therefore patch `json`, builtins,
`__eq__` or anything else in its own process without effect on the verdict: it never sees the expected
outputs and never runs the comparison.

The comparison is `evalplus.eval.unsafe_execute`'s, for one candidate over all inputs of a problem:
`out == exp`; EvalPlus's special oracles (HumanEval/32 `find_zero`: |poly(xs, out)| <= atol; MBPP+
`are_equivalent` / `sum_div`: right on every input or constantly True / 0; set-valued answers compared as
sets; regex-match answers compared as found / not found); and its float rule: when `atol` is 0 and the
expected output `is_floats`, atol becomes 1e-6 (for this and later inputs), and a non-exact answer passes if
its type (and length) match and `np.allclose(out, exp, rtol=1e-07, atol=atol)`.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any

import numpy as np

# MBPP+ tasks whose answers are compared specially (EvalPlus's MBPP_OUTPUT_SET_EQ_TASKS / _NOT_NONE_TASKS)
MBPP_OUTPUT_SET_EQ_TASKS = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                            "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
MBPP_OUTPUT_NOT_NONE_TASKS = {"check_str", "text_match_three", "text_starta_endb"}

# the only globals an output pickle may name: value types (called with data already in the stream; nothing
# here turns a few bytes into a huge object, e.g. no `range`, `bytearray`, `bytes`)
_SAFE_GLOBALS = {
    ("builtins", n) for n in ("complex", "slice", "int", "float", "str", "list", "dict", "set", "frozenset",
                              "tuple", "bool")
} | {("collections", n) for n in ("OrderedDict", "defaultdict", "Counter", "deque")} | {
    ("fractions", "Fraction"), ("decimal", "Decimal")}


class Digest(str):
    """The SHA-256 of a huge output's pickle, standing in for the output (equal iff the digests are)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and str.__eq__(self, other)

    __hash__ = str.__hash__


class UnsafeOutput(Exception):
    """An output pickle that names anything but plain data types."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeOutput(f"{module}.{name}")


def loads_data(data: bytes) -> Any:
    return _DataUnpickler(io.BytesIO(data)).load()


def read_frames(stream: bytes) -> list[Any]:
    """The records a program wrote: 4-byte big-endian length + pickle each; a torn/forged frame ends the list."""
    out, pos = [], 0
    while pos + 4 <= len(stream):
        (n,) = struct.unpack(">I", stream[pos:pos + 4])
        if pos + 4 + n > len(stream):
            break
        try:
            out.append(loads_data(stream[pos + 4:pos + 4 + n]))
        except Exception:  # noqa: BLE001 - an unreadable or unsafe record: the answer is wrong from here on
            out.append(("unreadable",))
            break
        pos += 4 + n
    return out


def _poly(xs: list, x: float) -> float:
    """EvalPlus's oracle for HumanEval/32: the polynomial with coefficients xs at x."""
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def is_floats(x: Any) -> bool:
    """evalplus.eval.is_floats: a float, or a non-empty list/tuple of floats (or a float numpy array)."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype in (np.float64, np.float32)
    return False


def _eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. RecursionError on absurdly deep data: not equal
        return False


def compare(dataset: str, entry: str, inputs: list, expected: list, outputs: list, atol: float) -> str | None:
    """None if every output is right, else why not (EvalPlus's rules, see the module docstring)."""
    atol = float(atol or 0.0)
    original_ok, always_true, always_zero = True, True, True
    for i, (inp, exp) in enumerate(zip(inputs, expected, strict=True)):
        out = outputs[i]
        exact = _eq(out, exp)
        if dataset == "mbpp":
            if entry == "are_equivalent":  # Mbpp/164: right on every input, or always True
                original_ok, always_true = original_ok and exact, always_true and _eq(out, True)
                exact = original_ok or always_true
            elif entry == "sum_div":  # Mbpp/295: right on every input, or always 0
                original_ok, always_zero = original_ok and exact, always_zero and _eq(out, 0)
                exact = original_ok or always_zero
            elif entry in MBPP_OUTPUT_SET_EQ_TASKS:
                try:
                    exact = set(out) == set(exp)
                except Exception:  # noqa: BLE001
                    exact = False
        if dataset == "humaneval" and entry == "find_zero":
            try:
                ok = abs(_poly(*inp, out)) <= atol
            except Exception:  # noqa: BLE001
                ok = False
            if not ok:
                return f"wrong output on input #{i}"
            continue
        if atol == 0 and is_floats(exp):
            atol = 1e-6  # EvalPlus enforces atol for float comparison (and keeps it for later inputs)
        if not exact and atol != 0:
            try:
                ok = (type(out) is type(exp) and (not isinstance(exp, (list, tuple)) or len(out) == len(exp))
                      and bool(np.allclose(out, exp, rtol=1e-07, atol=atol)))
            except Exception:  # noqa: BLE001
                ok = False
        else:
            ok = exact
        if not ok:
            return f"wrong output on input #{i}"
    return None
