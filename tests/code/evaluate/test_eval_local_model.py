"""A local model folder end to end (a tiny random GPT-2 built here, no downloads): completion and infilling
through the project's generation layer, then execution and scoring. Its pass@1 is 0 — the path is the point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.code.evaluate.sandbox import Sandbox


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny-model")
    special = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "for i in range(10):\n    print(i)\n"] * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.save_pretrained(d)
    cfg = transformers.GPT2Config(vocab_size=len(fast), n_positions=2048, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def test_local_model_completion_and_infill(tiny_model: Path, sandbox: Sandbox, tmp_path: Path,
                                           data_dir: Path) -> None:
    out = tmp_path / "o"
    rc = main(["code", "evaluate", str(tiny_model), "--tasks", "humaneval,humaneval-fim-random-span-light",
               "--limit", "2", "--max-new-tokens", "8", "--n-samples", "2", "--temperature", "0.7",
               "-o", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for task in ("humaneval", "humaneval-fim-random-span-light"):
        assert 0.0 <= res[task]["pass@1"] <= 1.0
        assert res["metadata"]["tasks"][task]["n_samples"] == 4
        gens = (out / f"generations_{task}.jsonl").read_text().splitlines()
        assert len(gens) == 4
    assert res["metadata"]["model"] == str(tiny_model)
    assert res["metadata"]["tasks"]["humaneval"]["generation"]["temperature"] == 0.7
    lines = (out / "samples_results.jsonl").read_text().splitlines()
    assert len(lines) == 8
