"""`domainfm code generate`: one prompt, FIM, a JSONL batch, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.code.generate import GenerationConfig, Generator


def test_prompt_and_infill(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    ref = Generator(tiny_model)
    assert main(["code", "generate", str(tiny_model), "--prompt", "def f():", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == ref.complete(["def f():"], GenerationConfig(max_new_tokens=6))[0][0] + "\n"
    assert main(["code", "generate", str(tiny_model), "--prefix", "a = ", "--suffix", "\nb = 2\n",
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == ref.infill(["a = "], ["\nb = 2\n"], GenerationConfig(max_new_tokens=6))[0][0] + "\n"


def test_prompts_file(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": 1, "prompt": "import"}) + "\n" + json.dumps({"id": 2, "prefix": "x", "suffix": "y"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["code", "generate", str(tiny_model), "--prompts", str(f), "-o", str(out), "--n-samples", "2",
                 "--temperature", "0.8", "--seed", "3", "--max-new-tokens", "5"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and all(len(r["completions"]) == 2 for r in rows)
    assert main(["code", "generate", str(tiny_model), "--prompts", str(f), "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_stop_flag(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    full = Generator(tiny_model).complete(["x = "], GenerationConfig(max_new_tokens=16))[0][0]
    stop = full[2:4]
    assert main(["code", "generate", str(tiny_model), "--prompt", "x = ", "--max-new-tokens", "16",
                 "--stop", stop, "--stop", "NEVER"]) == 0
    assert capsys.readouterr().out == full[:full.find(stop)] + "\n"


def test_bad_input(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["code", "generate", str(tiny_model)]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["code", "generate", str(tmp_path), "--prompt", "x"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    assert main(["code", "generate", str(tiny_model), "--prompts", str(bad)]) == 2
    assert "prompt" in capsys.readouterr().err


def test_infill_with_path_uses_the_repository_prompt(tiny_model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    ref = Generator(tiny_model)
    cfg = GenerationConfig(max_new_tokens=6)
    want = ref.infill(["a = "], ["\nb = 2\n"], cfg, paths=["pkg/m.py"], repo_name="org/r")[0][0]
    assert main(["code", "generate", str(tiny_model), "--prefix", "a = ", "--suffix", "\nb = 2\n", "--path",
                 "pkg/m.py", "--repo-name", "org/r", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == want + "\n"
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prefix": "a = ", "suffix": "\nb = 2\n", "path": "pkg/m.py", "repo_name": "org/r"}) + "\n")
    assert main(["code", "generate", str(tiny_model), "--prompts", str(f), "--max-new-tokens", "6"]) == 0
    assert json.loads(capsys.readouterr().out)["completions"] == [want]
    assert main(["code", "generate", str(tiny_model), "--prompt", "x", "--path", "a.py"]) == 2
