"""FIM prompts: repository-level layout as StarCoder2 trains it, long prompts cut as text around the
frame, stop strings through transformers' `stop_strings`, one stop-truncation function."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

import pytest

from domainfm.code.data.fim import render, repo_sample
from domainfm.code.generate import GenerationConfig, Generator, apply_stop

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def gen(tiny_model: Path) -> Generator:
    return Generator(tiny_model)  # Starcoder2, max_position_embeddings 256


class Spy:
    """Wraps `model.generate` and records its keyword arguments and output widths."""

    def __init__(self, g: Generator) -> None:
        self.calls: list[dict[str, Any]] = []
        self.model = g.model
        self.orig = g.model.generate

    def __enter__(self) -> Spy:
        def generate(*args: Any, **kwargs: Any) -> Any:
            out = self.orig(*args, **kwargs)
            self.calls.append({**kwargs, "_in": kwargs["input_ids"].clone(), "_out_width": out.shape[1]})
            return out

        self.model.generate = generate
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model.generate  # back to the class method


def test_repository_fim_prompt_is_the_training_layout(gen: Generator) -> None:
    """StarCoder2 paper (arXiv:2402.19173, section 5.2): <repo_name>NAME<file_sep>PATH\\nCODE ...
    <file_sep><fim_prefix>PATH\\nPRE<fim_suffix>SUF<fim_middle>; the path heads the prefix."""
    ids = gen.build_fim_prompt("def f(", "):\n    pass\n", path="src/pkg/a.py", repo_name="org/repo",
                               context_files=[("src/pkg/b.py", "X = 1\n")])
    assert gen.tokenizer.decode(ids, skip_special_tokens=False) == (
        "<repo_name>org/repo<file_sep>src/pkg/b.py\nX = 1\n"
        "<file_sep><fim_prefix>src/pkg/a.py\ndef f(<fim_suffix>):\n    pass\n<fim_middle>")
    # the same text as a packed training sample up to <fim_middle> (code/data: path heads the prefix)
    code = (STDLIB / "json" / "__init__.py").read_text()[:600]
    for seed in range(5):
        pieces = repo_sample("org/repo", [("Lib/json/__init__.py", code)], seed=seed, fim_rate=1.0, spm_rate=0.0,
                             meta_rate=1.0)
        pre = pieces[4].removeprefix("Lib/json/__init__.py\n")
        trained = render(pieces)
        prompt = gen.build_fim_prompt(pre, pieces[6], path="Lib/json/__init__.py", repo_name="org/repo")
        text = gen.tokenizer.decode(prompt, skip_special_tokens=False)
        assert trained.startswith(text) and text.endswith("<fim_middle>")
    # a special-token string inside the code stays text, as packing tokenises it (one frame, no EOS)
    ids = gen.build_fim_prompt("SEP = '<file_sep>'\nEOS = '<|endoftext|>'\n", "<fim_middle>", path="t.py",
                               repo_name="r")
    specials = [i for i in ids if i in gen.tokenizer.all_special_ids]
    sep, rid = gen.tokenizer.convert_tokens_to_ids(["<file_sep>", "<repo_name>"])
    assert specials == [rid, sep, *gen.fim_ids()[:2], gen.fim_ids()[2]]
    # SPM, Megatron's "variant 2" as packed: <fim_prefix><fim_suffix>SUF<fim_middle>PATH\nPRE
    spm = gen.build_fim_prompt("def f(", "):\n", path="a.py", repo_name="r", spm=True)
    assert gen.tokenizer.decode(spm, skip_special_tokens=False) == (
        "<repo_name>r<file_sep><fim_prefix><fim_suffix>):\n<fim_middle>a.py\ndef f(")
    # without repository context: unchanged (the serving layer relies on [pre, suf, *SUFFIX, mid])
    plain = gen.build_fim_prompt("", "x")
    assert plain[:2] == list(gen.fim_ids()[:2]) and plain[-1] == gen.fim_ids()[2]


def test_long_fim_prompt_keeps_the_frame_and_cuts_the_text(gen: Generator) -> None:
    """Before: the ids were cut from the left, which removed <fim_prefix> (and the prefix's start)."""
    source = (STDLIB / "json" / "decoder.py").read_text()
    hole = source.index("def py_scanstring")
    prefix, suffix = source[:hole], source[hole:]
    cfg = GenerationConfig(max_new_tokens=16)
    pre, suf, mid = gen.fim_ids()
    with Spy(gen) as spy:
        gen.infill([prefix], [suffix], cfg)
    row = spy.calls[0]["_in"][0].tolist()
    assert len(row) <= 256 - 16 and row.count(pre) == row.count(suf) == row.count(mid) == 1
    assert row[0] == pre and row[-1] == mid
    text = gen.tokenizer.decode(row, skip_special_tokens=False)
    kept_pre, kept_suf = text.removeprefix("<fim_prefix>").removesuffix("<fim_middle>").split("<fim_suffix>")
    assert prefix.endswith(kept_pre) and len(kept_pre) > 100 and kept_pre.startswith("    ") is False
    assert (prefix[:-len(kept_pre)]).endswith("\n")  # cut at a line start
    assert suffix.startswith(kept_suf) and 0 < len(kept_suf) < len(suffix) and kept_suf.endswith("\n")
    # repository context goes first when the room runs out; the frame and the path stay
    ctx = [("Lib/json/encoder.py", (STDLIB / "json" / "encoder.py").read_text())]
    ids = gen.build_fim_prompt(prefix, suffix, max_len=240, path="Lib/json/decoder.py", repo_name="python/json",
                               context_files=ctx)
    text = gen.tokenizer.decode(ids, skip_special_tokens=False)
    assert len(ids) <= 240 and text.startswith("<repo_name>python/json<file_sep><fim_prefix>Lib/json/decoder.py\n")
    assert "encoder.py" not in text and text.endswith("<fim_middle>")


def test_stop_strings_use_transformers_stop_strings(gen: Generator) -> None:
    full = gen.complete(["x = "], GenerationConfig(max_new_tokens=24))[0][0]
    # a stop string that is real text (the random model also emits byte pieces and special tokens):
    # the text of a generated token made of 2+ ASCII letters
    ids = gen.tokenizer(full, add_special_tokens=False).input_ids
    words = [w for i in ids if (w := gen.tokenizer.decode([i]).strip()).isascii() and w.isalpha() and len(w) >= 2]
    assert words, full
    stop = words[0]
    with Spy(gen) as spy:
        cut = gen.complete(["x = "], GenerationConfig(max_new_tokens=24, stop=[stop, "", "NEVER-SEEN"]))[0][0]
    kw = spy.calls[0]
    assert kw["stop_strings"] == [stop, "NEVER-SEEN"] and kw["tokenizer"] is gen.tokenizer
    assert "stopping_criteria" not in kw  # no criteria of our own
    assert kw["_out_width"] < kw["_in"].shape[1] + 24  # generation ended at the stop, not at max_new_tokens
    assert cut == full[:full.find(stop)]


def test_one_stop_truncation_function_for_generate_serve_and_evaluate() -> None:
    from domainfm.code.evaluate.tasks import truncate_at_stop

    assert truncate_at_stop is apply_stop
    assert apply_stop("    return x\n\ndef g():\n", ["\ndef", "\nclass", ""]) == "    return x\n"
