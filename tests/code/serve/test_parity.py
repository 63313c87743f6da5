"""Greedy answers through the server equal `domainfm code generate` token for token: alone, and inside 16
concurrent requests of mixed prompt lengths and max_tokens, some fill-in-the-middle, some streamed.

The reference is `Generator.complete([prompt])` / `Generator.infill([prefix], [suffix])` with one prompt,
i.e. exactly what `domainfm code generate MODEL --prompt ... / --prefix ... --suffix ...` runs (transformers
`generate`, batch 1, no padding). The model uses RoPE, so a wrong position id or a leaked padding column in the
left-padded batch changes its output (checked below: the same prompt decoded with padding but without the mask
or positions gives different tokens)."""

from __future__ import annotations

import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from domainfm.code.generate import GenerationConfig, Generator


def _snippets() -> list[str]:
    # real code of mixed lengths: ~4 .. ~200 tokens with this tokenizer (the model's context is 256)
    src = inspect.getsource(json.dumps)
    cuts = [8, 25, 50, 90, 140, 190, 250, 320]
    return [src[:c] for c in cuts]


def _specs() -> list[dict[str, Any]]:
    snips = _snippets()
    specs = []
    for i in range(16):
        s = snips[i % len(snips)]
        spec: dict[str, Any] = {"max_tokens": [5, 12, 24, 40][i % 4], "stream": i % 3 == 1}
        if i % 4 == 2:  # fill in the middle: cut the snippet in two
            spec |= {"prompt": s[: len(s) // 2], "suffix": s[len(s) // 2:]}
        else:
            spec["prompt"] = s if i < 8 else s[: len(s) - 5]
        if i == 5:
            spec["stop"] = ["\n"]
        specs.append(spec)
    return specs


def _reference(gen: Generator, spec: dict[str, Any]) -> str:
    cfg = GenerationConfig(max_new_tokens=spec["max_tokens"], stop=spec.get("stop", []))
    if "suffix" in spec:
        return gen.infill([spec["prompt"]], [spec["suffix"]], cfg)[0][0]
    return gen.complete([spec["prompt"]], cfg)[0][0]


def _ask(client: Any, spec: dict[str, Any]) -> str:
    kw = {k: v for k, v in spec.items() if k in ("prompt", "suffix", "max_tokens", "stop")}
    if spec["stream"]:
        pieces = [c.choices[0].text for c in client.completions.create(model="tiny", temperature=0, stream=True, **kw)]
        return "".join(pieces)
    return client.completions.create(model="tiny", temperature=0, **kw).choices[0].text


@pytest.fixture(scope="module")
def references(serve_model: Path) -> list[str]:
    gen = Generator(serve_model)
    return [_reference(gen, s) for s in _specs()]


def test_model_is_sensitive_to_positions_and_padding(serve_model: Path) -> None:
    """The test model is one where batching mistakes show: padding without mask/positions changes tokens."""
    import torch

    gen = Generator(serve_model)
    ids = gen.tokenizer(_snippets()[2]).input_ids
    with torch.no_grad():
        good = gen.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0)
        padded = torch.tensor([[0] * 20 + ids])
        bad = gen.model.generate(padded, attention_mask=torch.ones_like(padded), max_new_tokens=12,
                                 do_sample=False, pad_token_id=0)
    assert good[0, len(ids):].tolist() != bad[0, padded.shape[1]:].tolist()


def test_alone_equals_generate(live: Any, references: list[str]) -> None:
    client = live.client()
    specs = _specs()
    for i in (0, 2, 5, 7):  # a completion, a FIM, a stop string, a stream; one request at a time
        assert _ask(client, specs[i]) == references[i], specs[i]


def test_16_concurrent_mixed_requests_equal_generate(live: Any, references: list[str]) -> None:
    client = live.client()
    specs = _specs()
    before = live.state.engine.peak_running
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda s: _ask(client, s), specs))
    for spec, out, ref in zip(specs, got, references, strict=True):
        assert out == ref, spec
    assert sum(bool(r) for r in references) >= 12  # the answers are not trivially empty
    # the requests really were decoded together (not one after the other)
    assert live.state.engine.peak_running >= max(before, 4)


def test_seeded_sampling_is_reproducible_and_matches_generate(live: Any, serve_model: Path) -> None:
    client = live.client()
    prompt = _snippets()[3]
    kw = {"prompt": prompt, "max_tokens": 16, "temperature": 0.8, "top_p": 0.95, "seed": 11}
    with ThreadPoolExecutor(6) as pool:  # the same seeded request alone and among other traffic
        futs = [pool.submit(lambda: client.completions.create(model="tiny", **kw).choices[0].text) for _ in range(3)]
        futs += [pool.submit(lambda: client.completions.create(model="tiny", prompt="import os\n", max_tokens=20,
                                                                temperature=1.0).choices[0].text) for _ in range(3)]
        outs = [f.result() for f in futs[:3]]
    assert outs[0] == outs[1] == outs[2]
    ref = Generator(serve_model).complete([prompt], GenerationConfig(max_new_tokens=16, temperature=0.8, top_p=0.95,
                                                                      seed=11))[0][0]
    assert outs[0] == ref  # n=1: the same draws as `domainfm code generate --seed 11`
    other = client.completions.create(model="tiny", **(kw | {"seed": 12})).choices[0].text
    assert other != outs[0]


def test_starcoder1_gptbigcode_folder_batched_equals_generate(serve_model: Path, live_server: Any,
                                                              tmp_path: Path) -> None:
    """StarCoder (1) checkouts are GPTBigCode (multi-query attention, learned positions): same parity."""
    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    tok = AutoTokenizer.from_pretrained(serve_model)
    cfg = GPTBigCodeConfig(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=4, multi_query=True,
                           bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path / "sc1"
    GPTBigCodeForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    specs = [s for s in _specs() if "stop" not in s][:8]
    gen = Generator(folder)
    refs = [_reference(gen, s) for s in specs]
    with live_server(folder, model_name="tiny") as srv:
        client = srv.client()
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda s: _ask(client, s), specs))
        assert srv.state.engine.peak_running >= 2
    assert got == refs
