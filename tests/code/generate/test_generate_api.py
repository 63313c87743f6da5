"""The generation layer on a tiny random Starcoder2: determinism, batching, stops, FIM, n samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainfm.code.generate import GenerationConfig, Generator, apply_stop
from domainfm.core.errors import UserError

PROMPTS = ["def add(a, b):\n    return", "import os\n", "class Foo:\n    def __init__(self):\n        self.x = 1\n", "#"]


@pytest.fixture(scope="module")
def gen(tiny_model: Path) -> Generator:
    return Generator(tiny_model)


def test_constructor_does_no_io(tmp_path: Path) -> None:
    g = Generator(tmp_path / "missing")  # fine until used
    with pytest.raises(UserError, match="not a model folder"):
        g.complete(["x"])


def test_greedy_batch_equals_one_by_one(gen: Generator) -> None:
    cfg = GenerationConfig(max_new_tokens=12, batch_size=4)
    batched = gen.complete(PROMPTS, cfg)
    single = [gen.complete([p], GenerationConfig(max_new_tokens=12, batch_size=1))[0] for p in PROMPTS]
    assert batched == single
    assert all(len(r) == 1 for r in batched) and any(r[0] for r in batched)


def test_greedy_matches_plain_transformers_generate(gen: Generator) -> None:
    import torch

    ids = gen.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        ref = gen.model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=0)
    ref_text = gen.tokenizer.decode(ref[0, ids.shape[1]:].tolist(), skip_special_tokens=False)
    ref_text = ref_text.split("<|endoftext|>")[0]
    assert gen.complete([PROMPTS[0]], GenerationConfig(max_new_tokens=10))[0][0] == ref_text


def test_sampling_is_seeded_and_does_not_touch_the_global_rng(gen: Generator) -> None:
    import torch

    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7, n_samples=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = gen.complete(PROMPTS[:2], cfg)
    assert torch.rand(1) == before  # the caller's RNG stream is unchanged
    assert a == gen.complete(PROMPTS[:2], cfg)
    assert [len(r) for r in a] == [3, 3]
    assert len(set(a[0])) > 1  # samples differ from each other
    other = gen.complete(PROMPTS[:2], GenerationConfig(max_new_tokens=10, temperature=1.0, seed=8, n_samples=3))
    assert other != a


def test_stop_strings_cut_the_text_and_end_generation(gen: Generator) -> None:
    full = gen.complete(["x = "], GenerationConfig(max_new_tokens=24))[0][0]
    assert len(full) >= 6, full
    stop = full[3:5]
    cut = gen.complete(["x = "], GenerationConfig(max_new_tokens=24, stop=[stop, "NEVER-SEEN"]))[0][0]
    assert cut == full[:full.find(stop)]
    assert apply_stop("abc\ndef", ["\n", "c"]) == "ab"


def test_infill_returns_only_the_middle(tmp_path: Path, gen_tokenizer: Path, make_model) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gen_tokenizer)
    x = tok.convert_tokens_to_ids(tok.tokenize("x")[0])
    g = Generator(make_model(tmp_path / "x", gen_tokenizer, always=x))
    mids = g.infill(["def f():\n    return ", "a"], ["\n\nprint(f())\n", "b"], GenerationConfig(max_new_tokens=5))
    assert mids == [["xxxxx"], ["xxxxx"]]  # no prefix, no suffix, no FIM tokens
    assert g.complete(["abc"], GenerationConfig(max_new_tokens=3)) == [["xxx"]]


@pytest.mark.parametrize("end", ["<|endoftext|>", "<file_sep>", "<fim_prefix>"])
def test_infill_stops_at_end_of_middle(tmp_path: Path, gen_tokenizer: Path, make_model, end: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gen_tokenizer)
    g = Generator(make_model(tmp_path / "e", gen_tokenizer, always=tok.convert_tokens_to_ids(end)))
    assert g.infill(["a"], ["b"], GenerationConfig(max_new_tokens=8)) == [[""]]


def test_fim_prompt_layout(gen: Generator) -> None:
    ids = gen.build_fim_prompt("def f(", "):\n")
    text = gen.tokenizer.decode(ids, skip_special_tokens=False)
    assert text == "<fim_prefix>def f(<fim_suffix>):\n<fim_middle>"


def test_bad_config(gen: Generator) -> None:
    with pytest.raises(UserError):
        gen.complete(["x"], GenerationConfig(top_p=0))
    with pytest.raises(UserError):
        gen.infill(["a", "b"], ["c"])
    with pytest.raises(UserError, match="context"):
        gen.complete(["x"], GenerationConfig(max_new_tokens=1000))


def test_any_causal_lm_folder_gptbigcode(tmp_path: Path, gen_tokenizer: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    tok = AutoTokenizer.from_pretrained(gen_tokenizer)
    torch.manual_seed(0)
    cfg = GPTBigCodeConfig(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, multi_query=True,
                           bos_token_id=0, eos_token_id=0)
    GPTBigCodeForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    g = Generator(tmp_path / "m")
    batched = g.complete(PROMPTS, GenerationConfig(max_new_tokens=8, batch_size=4))
    assert batched == [g.complete([p], GenerationConfig(max_new_tokens=8))[0] for p in PROMPTS]
    assert len(g.infill(["a"], ["b"], GenerationConfig(max_new_tokens=4))[0]) == 1
