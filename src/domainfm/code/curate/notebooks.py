"""Jupyter notebooks in The Stack v2's two forms: a script (jupytext) and the structured sequence.

StarCoder2 §2.4.1 / §5.4 and bigcode-dataset ``preprocessing/jupyter-structured`` (segment_blocks,
build_content), which this module follows:

* **script**: the notebook converted by jupytext into a script of the kernel's language (markdown
  cells become comments; jupytext's ``percent`` format, without the notebook/cell metadata header so
  that the output does not depend on the jupytext version). The language comes from the notebook
  metadata (``language_info.file_extension``, ``kernelspec.language``, ``language_info.name``);
  bigcode guessed the rest with guesslang (a TensorFlow model), we report them as
  ``unknown_kernel_language`` instead of guessing.
* **structured** (Python notebooks only, as StarCoder2 kept "only notebooks explicitly marked as
  Python"): consecutive markdown / code cells are merged, each markdown group is paired with the
  following code group, and the pair is written as
  ``<jupyter_text>{markdown}<jupyter_code>{code}<jupyter_output>{output}`` after one
  ``<jupyter_start>``. A leading code group has no ``<jupyter_text>``; a trailing markdown group is
  dropped. The output is the first output's ``text`` (a stream) of the group's last code cell,
  ``<empty_output>`` when there is none, cut to 1,000 characters + ``[...]``. StarCoder2 keeps the
  markdown structure (StarCoder removed it): markdown cells are joined with a blank line, code cells
  with a newline.

A notebook that is not JSON or not a notebook raises `NotebookError` with a drop reason.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from domainfm.code.tokenizer.special import STARCODER2_SPECIAL_TOKENS

_TOK = {t[1:-1]: t for t in STARCODER2_SPECIAL_TOKENS}
JUPYTER_START, JUPYTER_TEXT, JUPYTER_CODE = _TOK["jupyter_start"], _TOK["jupyter_text"], _TOK["jupyter_code"]
JUPYTER_OUTPUT, EMPTY_OUTPUT = _TOK["jupyter_output"], _TOK["empty_output"]
MAX_OUTPUT_CHARS = 1000  # bigcode build_content: output[:1000] + "[...]"
TRUNCATION_MARK = "[...]"


class NotebookError(ValueError):
    """A notebook that cannot be read; `reason` is the drop reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class NotebookForms:
    """The forms of one notebook: `script` (None when the kernel language is unknown or jupytext cannot
    write it), its file extension and `structured` (None unless a Python notebook with code)."""

    script: str | None
    script_ext: str | None
    structured: str | None
    kernel_language: str | None
    script_missing: str | None = None  # why there is no script
    structured_missing: str | None = None  # why there is no structured form


def read_notebook(text: str) -> Any:
    """`nbformat` v4 notebook from JSON text; NotebookError("corrupt_notebook") when unreadable.
    Schema warnings (a missing cell id ...) are tolerated, as bigcode's json.loads was. A v3 notebook
    (``worksheets``, a ``language`` per code cell) keeps its cells' language in ``metadata.language``."""
    import warnings

    import nbformat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = nbformat.reader.reads(text)
            v3_langs = {c.get("language") for ws in raw.get("worksheets", []) for c in ws.get("cells", [])
                        if c.get("cell_type") == "code" and c.get("language")} if raw.get("nbformat") == 3 else set()
            nb = nbformat.convert(raw, 4)  # no schema validation: bigcode read notebooks with json.loads
        if len(v3_langs) == 1 and not nb.metadata.get("language_info") and not nb.metadata.get("kernelspec"):
            nb.metadata["language"] = v3_langs.pop()
        cells = nb.get("cells")
        if not isinstance(cells, list) or not all(isinstance(c, dict) and "cell_type" in c for c in cells):
            raise ValueError("'cells' is not a list of cells")
    except Exception as exc:  # nbformat raises NotJSONError, ValidationError, TypeError, KeyError ...
        raise NotebookError("corrupt_notebook", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return nb


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def kernel_language(nb: Any) -> tuple[str | None, str | None]:
    """(language name, script extension) from the notebook metadata; (None, None) when absent."""
    from jupytext.languages import _SCRIPT_EXTENSIONS

    meta = nb.get("metadata", {}) or {}
    info = meta.get("language_info", {}) or {}
    kernel = meta.get("kernelspec", {}) or {}
    lang = kernel.get("language") or info.get("name") or meta.get("language")
    ext = info.get("file_extension")
    if ext and ext in _SCRIPT_EXTENSIONS:
        return lang or _SCRIPT_EXTENSIONS[ext]["language"], ext
    if lang:
        low = str(lang).lower()
        for e, spec in _SCRIPT_EXTENSIONS.items():
            if spec["language"].lower() == low:
                return lang, e
    return (str(lang) if lang else None), None


def to_script(nb: Any, ext: str) -> str:
    """The notebook as a script in jupytext's percent format (no metadata header)."""
    import copy

    import jupytext

    nb = copy.deepcopy(nb)
    nb.metadata["jupytext"] = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}
    return jupytext.writes(nb, fmt=f"{ext[1:]}:percent")


def _first_output_text(cell: dict) -> str | None:
    """bigcode segment_blocks: the first output's `text` (streams); None when there is none."""
    outputs = cell.get("outputs") or []
    if outputs and isinstance(outputs[0], dict) and "text" in outputs[0]:
        text = outputs[0]["text"]
        return "".join(text) if isinstance(text, list) else str(text)
    return None


def _output_str(output: str | None) -> str:
    if output is None:
        return EMPTY_OUTPUT
    if len(output) > MAX_OUTPUT_CHARS:
        return output[:MAX_OUTPUT_CHARS] + TRUNCATION_MARK
    return output


def to_structured(nb: Any) -> str | None:
    """The structured form (see the module docstring); None when the notebook has no code cell."""
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") in ("markdown", "code") and _source(c)]
    groups = [(kind, list(g)) for kind, g in itertools.groupby(cells, key=lambda c: c["cell_type"])]
    if groups and groups[-1][0] == "markdown":
        groups = groups[:-1]
    if not groups:
        return None
    if groups[0][0] == "code":
        groups.insert(0, ("markdown", []))
    parts = [JUPYTER_START]
    for (_, md), (_, code) in zip(groups[0::2], groups[1::2], strict=True):
        markdown = "\n\n".join(_source(c) for c in md).strip()
        source = "\n".join(_source(c) for c in code).strip()
        output = _output_str(_first_output_text(code[-1])).strip()
        if md:
            parts.append(f"{JUPYTER_TEXT}{markdown}")
        parts.append(f"{JUPYTER_CODE}{source}{JUPYTER_OUTPUT}{output}")
    return "".join(parts)


def convert(text: str) -> NotebookForms:
    """Both forms of the notebook JSON `text`; NotebookError when it is not a readable notebook."""
    nb = read_notebook(text)
    lang, ext = kernel_language(nb)
    script = script_missing = None
    if ext is None:
        script_missing = "unknown_kernel_language"
    else:
        try:
            script = to_script(nb, ext)
        except Exception:  # jupytext refuses some exotic notebooks; the structured form may still exist
            script_missing = "jupytext_failed"
        else:
            if not script.strip():
                script, script_missing = None, "empty_notebook"
    structured = structured_missing = None
    is_python = ext in (".py",) or (lang or "").lower().startswith("python")
    if not is_python:
        structured_missing = "not_python"
    else:
        structured = to_structured(nb)
        if structured is None:
            structured_missing = "no_code_cells"
    return NotebookForms(script, ext, structured, lang, script_missing, structured_missing)
