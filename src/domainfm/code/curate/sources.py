"""The `sources` step: turn decoded inputs into the records The Stack v2 trains on.

Runs right after `read` (decode). For each record it:

* re-detects the language of content-ambiguous extensions (``.h``, ``.m``, ``.pl``, ``.ts`` ...) from the
  whole text with linguist's heuristics (`read` only looks at the first bytes);
* expands a Jupyter notebook (``*.ipynb``) into up to two records, ``kind`` ``notebook_script`` (the
  jupytext script, in the kernel's language) and ``notebook_structured`` (StarCoder2's
  ``<jupyter_start>`` form); a notebook that is not readable is dropped (``corrupt_notebook``), one
  with neither form is dropped with the reason of the missing script;
* formats a GitHub thread file (``<github_dir>/**/*.json`` at a repository's top, see
  `curate.github`) into one ``issue`` or ``pull_request`` record, or drops it with the thread's reason.

Other records pass unchanged as ``kind`` ``file``. Derived records keep the source file's `path`,
`swhid` (the source blob) and licenses; `size` becomes the size of the derived text. The counts of
what came in and what was produced are in `counts` (the run's stats.json ``sources``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from domainfm.code.curate import github, notebooks
from domainfm.code.curate.languages import HEURISTIC_CHARS, detect_language, is_ambiguous
from domainfm.core.steps import Record, Step, StepContext

KINDS = ("file", "notebook_script", "notebook_structured", "issue", "pull_request")
STRUCTURED_LANGUAGE = "Jupyter Notebook"


def is_github_thread(path: str, github_dir: str) -> bool:
    p = PurePosixPath(path)
    return bool(github_dir) and len(p.parts) > 1 and p.parts[0] == github_dir and p.suffix.lower() == ".json"


class SourceStep(Step):
    name = "sources"

    def __init__(self, notebooks_enabled: bool = True, github_dir: str = ".github-api") -> None:
        self.notebooks = notebooks_enabled
        self.github_dir = github_dir
        self.counts: Counter = Counter()

    def _derived(self, rec: Record, kind: str, content: str, language: str | None) -> Record:
        out = dict(rec)
        out.update(kind=kind, content=content, language=language, size=len(content.encode("utf-8")))
        self.counts[f"{kind}_records"] += 1
        return out

    def _notebook(self, rec: Record, ctx: StepContext) -> Iterator[Record]:
        self.counts["notebooks_in"] += 1
        try:
            forms = notebooks.convert(rec["content"])
        except notebooks.NotebookError as exc:
            rec["_detail"] = str(exc)
            ctx.drop(rec, self.name, exc.reason)
            return
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # valid JSON, odd shapes inside
            rec["_detail"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            ctx.drop(rec, self.name, "corrupt_notebook")
            return
        for missing in (forms.script_missing, forms.structured_missing):
            if missing:
                self.counts[f"notebook_{missing}"] += 1
        if forms.script is None and forms.structured is None:
            ctx.drop(rec, self.name, forms.script_missing or "empty_notebook")
            return
        if forms.script is not None:
            lang = detect_language("notebook" + (forms.script_ext or ""), forms.script) or forms.kernel_language
            yield self._derived(rec, "notebook_script", forms.script, lang)
        if forms.structured is not None:
            yield self._derived(rec, "notebook_structured", forms.structured, STRUCTURED_LANGUAGE)

    def _thread(self, rec: Record, ctx: StepContext) -> Iterator[Record]:
        self.counts["github_threads_in"] += 1
        try:
            kind, text = github.format_thread(rec["content"], rec.get("repo_name") or "")
        except github.ThreadDropped as exc:
            ctx.drop(rec, self.name, exc.reason)
            return
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # GitHub-like JSON of another shape
            rec["_detail"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            ctx.drop(rec, self.name, "malformed_github_thread")
            return
        lang = github.ISSUE_LANGUAGE if kind == "issue" else github.PR_LANGUAGE
        yield self._derived(rec, kind, text, lang)

    def process(self, records: Iterable[Record], ctx: StepContext) -> Iterator[Record]:
        for rec in records:
            path = rec["path"]
            if self.github_dir and is_github_thread(path, self.github_dir):
                yield from self._thread(rec, ctx)
            elif self.notebooks and path.lower().endswith(".ipynb"):
                yield from self._notebook(rec, ctx)
            else:
                if is_ambiguous(path):
                    rec["language"] = detect_language(path, rec["content"][:HEURISTIC_CHARS])
                rec["kind"] = "file"
                yield rec


def derived_records(stats: dict) -> int:
    """Records the `sources` step created beyond one per input: out - (in - dropped)."""
    return int(stats["out"]) - (int(stats["in"]) - sum(stats["dropped"].values()))
