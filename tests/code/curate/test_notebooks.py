"""Jupyter notebooks: The Stack v2's script and structured forms, bad notebooks, and a curation run.

The structured format is bigcode-dataset's (preprocessing/jupyter-structured: segment_blocks +
build_content) with StarCoder2's change of keeping the markdown; the expected strings below are
written out by hand from that code, not produced by ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from domainfm.cli import main
from domainfm.code.curate import notebooks
from domainfm.code.tokenizer.special import STARCODER2_SPECIAL_TOKENS

PY_META = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
           "language_info": {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                             "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                             "pygments_lexer": "ipython3", "version": "3.11.4"}}
R_META = {"kernelspec": {"display_name": "R", "language": "R", "name": "ir"},
          "language_info": {"codemirror_mode": "r", "file_extension": ".r", "mimetype": "text/x-r-source",
                            "name": "R", "pygments_lexer": "r", "version": "4.3.1"}}


def md(*lines: str) -> dict:
    return {"cell_type": "markdown", "id": f"m{len(lines)}", "metadata": {}, "source": list(lines)}


def code(*lines: str, n: int = 1, stdout: str | None = None, result: str | None = None) -> dict:
    outputs: list[dict] = []
    if stdout is not None:
        outputs.append({"name": "stdout", "output_type": "stream", "text": stdout.splitlines(keepends=True)})
    if result is not None:
        outputs.append({"data": {"text/plain": [result]}, "execution_count": n, "metadata": {},
                        "output_type": "execute_result"})
    return {"cell_type": "code", "execution_count": n, "id": f"c{n}", "metadata": {}, "outputs": outputs,
            "source": list(lines)}


def notebook(cells: list[dict], meta: dict = PY_META) -> str:
    """Serialised the way Jupyter saves a notebook (indent=1, sources as lists of lines)."""
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


IRIS = notebook([
    md("# Iris\n", "Load the *iris* table and look at it."),
    code("import pandas as pd\n", "df = pd.read_csv('iris.csv')\n", "print(df.shape)", n=1, stdout="(150, 5)\n"),
    code("df.head()", n=2, result="   sepal_length  species\n0           5.1   setosa"),
    md("## Summary"),
    md("Mean of each column."),
    code("print(df.mean(numeric_only=True))", n=3, stdout="sepal_length    5.843\n"),
    md("That's all."),
])
# by hand from bigcode build_content: consecutive code cells merged with "\n" and the *last* one's first
# output's `text` (an execute_result has none -> <empty_output>); markdown groups joined by a blank line;
# the trailing markdown group dropped
IRIS_STRUCTURED = (
    "<jupyter_start>"
    "<jupyter_text># Iris\nLoad the *iris* table and look at it."
    "<jupyter_code>import pandas as pd\ndf = pd.read_csv('iris.csv')\nprint(df.shape)\ndf.head()"
    "<jupyter_output><empty_output>"
    "<jupyter_text>## Summary\n\nMean of each column."
    "<jupyter_code>print(df.mean(numeric_only=True))"
    "<jupyter_output>sepal_length    5.843"
)


def test_structured_form_matches_bigcode_format():
    forms = notebooks.convert(IRIS)
    assert forms.structured == IRIS_STRUCTURED
    assert forms.kernel_language == "python" and forms.script_ext == ".py"
    # the sentinels are StarCoder2's own special tokens
    for tok in ("<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>"):
        assert tok in STARCODER2_SPECIAL_TOKENS


def test_structured_leading_code_long_output_and_empty_cells():
    text = notebook([
        code("for i in range(400):\n", "    print(i)", n=1, stdout="".join(f"{i}\n" for i in range(400))),
        md("   "),  # whitespace-only markdown still counts as a cell (bigcode: len(source) > 0)
        {"cell_type": "code", "execution_count": None, "id": "e", "metadata": {}, "outputs": [], "source": []},
        code("x = 1", n=2),
    ])
    out400 = "".join(f"{i}\n" for i in range(400))
    expected = ("<jupyter_start><jupyter_code>for i in range(400):\n    print(i)<jupyter_output>"
                + out400[:1000] + "[...]" + "<jupyter_text><jupyter_code>x = 1<jupyter_output><empty_output>")
    assert len(out400) > 1000
    assert notebooks.convert(text).structured == expected


def test_script_form_is_jupytext_in_the_kernel_language():
    forms = notebooks.convert(IRIS)
    assert forms.script == (
        "# %% [markdown]\n# # Iris\n# Load the *iris* table and look at it.\n\n"
        "# %%\nimport pandas as pd\ndf = pd.read_csv('iris.csv')\nprint(df.shape)\n\n"
        "# %%\ndf.head()\n\n"
        "# %% [markdown]\n# ## Summary\n\n# %% [markdown]\n# Mean of each column.\n\n"
        "# %%\nprint(df.mean(numeric_only=True))\n\n"
        "# %% [markdown]\n# That's all.\n")
    r = notebooks.convert(notebook([md("# Model"), code("fit <- lm(mpg ~ wt, data = mtcars)\n", "summary(fit)")],
                                   R_META))
    assert r.script_ext == ".r" and "fit <- lm(mpg ~ wt, data = mtcars)" in r.script
    assert r.structured is None and r.structured_missing == "not_python"  # StarCoder2: Python notebooks only


def test_v3_notebook_language_from_its_cells():
    v3 = {"metadata": {"name": "old"}, "nbformat": 3, "nbformat_minor": 0, "worksheets": [{"metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["Old IPython notebook"]},
        {"cell_type": "code", "collapsed": False, "input": ["print('hi')"], "language": "python", "metadata": {},
         "outputs": [{"output_type": "stream", "stream": "stdout", "text": ["hi\n"]}], "prompt_number": 1}]}]}
    forms = notebooks.convert(json.dumps(v3))
    assert forms.structured == "<jupyter_start><jupyter_text>Old IPython notebook<jupyter_code>print('hi')" \
                               "<jupyter_output>hi"
    assert forms.script is not None and "print('hi')" in forms.script


@pytest.mark.parametrize("text", [IRIS[: len(IRIS) // 2], "", "[1, 2]", '{"nbformat": 4, "cells": 3}',
                                  '{"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [5]}'])
def test_corrupt_notebooks_get_a_reason(text):
    with pytest.raises(notebooks.NotebookError) as exc:
        notebooks.convert(text)
    assert exc.value.reason == "corrupt_notebook"


def _write_repo(root: Path, mbpp_code: str) -> Path:
    src = root / "src"
    a = src / "alice__notebooks"
    a.mkdir(parents=True)
    (a / "iris.ipynb").write_text(IRIS)
    (a / "broken.ipynb").write_text(IRIS[:300])
    (a / "stats.ipynb").write_text(notebook([md("# Linear model"), code("fit <- lm(mpg ~ wt, data = mtcars)\n",
                                                                        "summary(fit)", n=1)], R_META))
    contact = notebook([md("Questions: write to maria.rossi@unimi.it"),
                        code("import requests\n", "r = requests.get('https://example.org/api/v1/items')\n",
                             "print(r.status_code)", n=1, stdout="200\n")])
    (a / "contact.ipynb").write_text(contact)
    leak = notebook([md("# Practice: tuples"), code(*mbpp_code.splitlines(keepends=True), n=1)])
    (a / "leak.ipynb").write_text(leak)
    b = src / "bob__fork"
    b.mkdir()
    (b / "iris.ipynb").write_text(IRIS)  # an exact copy: both forms are duplicates of alice's
    return src


@pytest.fixture(scope="module")
def nb_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("nb")
    rows = [json.loads(line) for line in (data_dir / "code" / "mbpp" / "mbpp.jsonl").open()]
    task = next(r for r in rows if r["task_id"] == 2)  # similar_elements: a real MBPP solution
    src = _write_repo(root, task["code"].replace("\r\n", "\n"))
    bench = root / "bench.jsonl"
    bench.write_text(json.dumps({"text": task["code"]}) + "\n")
    out = root / "out"
    assert main(["code", "curate", str(src), "-o", str(out), "--no-humaneval", "--mbpp", "none",
                 "--decontaminate", str(bench), "--files-per-shard", "4"]) == 0
    return src, out


def test_curation_keeps_both_forms_and_accounts_for_every_notebook(nb_run):
    src, out = nb_run
    stats = json.loads((out / "stats.json").read_text())
    n_inputs = sum(1 for p in src.rglob("*") if p.is_file())
    assert stats["files_in"] == n_inputs == 6
    assert stats["files_in"] + stats["derived_records"] == stats["files_out"] + sum(stats["dropped"].values())
    assert stats["dropped_by_step"]["sources"] == {"corrupt_notebook": 1}
    assert stats["sources"]["notebooks_in"] == 6
    assert stats["sources"]["notebook_script_records"] == 5 and stats["sources"]["notebook_structured_records"] == 4
    data = pq.read_table(out / "data").to_pylist()
    alice = {(r["path"], r["kind"]): r for r in data if r["repo_name"] == "alice/notebooks"}
    assert alice[("iris.ipynb", "notebook_structured")]["content"] == IRIS_STRUCTURED
    assert alice[("iris.ipynb", "notebook_structured")]["language"] == "Jupyter Notebook"
    assert alice[("iris.ipynb", "notebook_script")]["language"] == "Python"
    assert alice[("stats.ipynb", "notebook_script")]["language"] == "R"
    assert ("stats.ipynb", "notebook_structured") not in alice
    assert stats["kinds"]["notebook_structured"]["files"] == 2  # iris + contact (bob's copy and leak dropped)
    removed = pq.read_table(out / "removed").to_pylist()
    assert len(removed) == sum(stats["dropped"].values())
    assert {(r["repo_name"], r["path"], r["kind"], r["reason"]) for r in removed} >= {
        ("alice/notebooks", "broken.ipynb", "file", "corrupt_notebook"),
        ("bob/fork", "iris.ipynb", "notebook_script", "exact_duplicate"),
        ("bob/fork", "iris.ipynb", "notebook_structured", "exact_duplicate"),
        ("alice/notebooks", "leak.ipynb", "notebook_script", "benchmark_contamination"),
        ("alice/notebooks", "leak.ipynb", "notebook_structured", "benchmark_contamination")}


def test_pii_is_redacted_in_both_notebook_forms(nb_run):
    _, out = nb_run
    data = pq.read_table(out / "data").to_pylist()
    forms = [r for r in data if r["path"] == "contact.ipynb"]
    assert {r["kind"] for r in forms} == {"notebook_script", "notebook_structured"}
    for r in forms:
        assert "maria.rossi@unimi.it" not in r["content"] and "<EMAIL>" in r["content"]
        assert r["n_redactions"] >= 1


def test_odd_shapes_inside_valid_json_are_drops_not_crashes():
    from domainfm.code.curate.sources import SourceStep
    from domainfm.core.steps import StepContext

    odd_nb = json.dumps({"cells": [], "metadata": "python", "nbformat": 4, "nbformat_minor": 5})
    odd_issue = json.dumps({"issue": {"user": {"login": "a", "type": "User"}, "title": "t", "body": 5}, "comments": []})
    recs = [{"path": "odd.ipynb", "content": odd_nb, "size": len(odd_nb)},
            {"path": ".github-api/issues/9.json", "content": odd_issue, "size": len(odd_issue), "repo_name": "o/r"}]
    ctx = StepContext()
    assert list(SourceStep()(recs, ctx)) == []
    assert dict(ctx.stats.step("sources").dropped) == {"corrupt_notebook": 1, "malformed_github_thread": 1}
