"""The engine without HTTP: batched prefill of prompts of different lengths that join at once.

Several waiting prompts are prefilled together (left-padded to the longest of their length group, each row with
position ids 0..n-1 over its real tokens and a mask hiding its padding). The oracle is transformers
`generate` on each prompt alone (`Generator.complete`, what `domainfm code generate` runs): the model is the
RoPE test model on which a wrong position id or a visible padding column changes the output
(`test_parity.py::test_model_is_sensitive_to_positions_and_padding`)."""

from __future__ import annotations

import inspect
import json
import threading
import time
from pathlib import Path

import pytest

from domainfm.code.generate import GenerationConfig, Generator
from domainfm.code.serve.engine import PAD_WASTE, Engine, Event, SamplingParams, Sequence


def _prompts() -> list[str]:
    src = inspect.getsource(json.dumps)
    return [src[:c] for c in (8, 12, 30, 33, 60, 95, 100, 180, 260, 330)]  # ~3 .. ~110 tokens


class Collector:
    """A sequence's emitted text and finish reason, with an event set when it ends."""

    def __init__(self) -> None:
        self.text, self.finish, self.done = "", None, threading.Event()

    def __call__(self, ev: Event) -> None:
        self.text += ev.delta
        if ev.finish_reason is not None:
            self.finish = ev.finish_reason
            self.done.set()


def _seq(gen: Generator, prompt: str, max_tokens: int, cancelled: bool = False, stream: bool = True
         ) -> tuple[Sequence, Collector]:
    col = Collector()
    seq = Sequence(gen.tokenizer(prompt).input_ids, SamplingParams(max_tokens=max_tokens, temperature=0,
                                                                     end_ids=frozenset(gen._end_ids(fim=False))), col,
                   stream=stream)
    seq.cancelled = cancelled
    return seq, col


def _wait_idle(engine: Engine, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while engine.running or engine.queue_depth:
        assert time.monotonic() < deadline, "the engine did not drain"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def gen(serve_model: Path) -> Generator:
    return Generator(serve_model)


def test_prompts_joining_at_once_are_prefilled_together_and_equal_generate(gen: Generator) -> None:
    prompts = _prompts()
    max_tokens = [6, 14, 9, 20, 4, 11, 17, 8, 13, 10]
    refs = [gen.complete([p], GenerationConfig(max_new_tokens=m))[0][0] for p, m in zip(prompts, max_tokens,
                                                                                     strict=True)]
    engine = Engine(gen.model, gen.tokenizer, "cpu", max_batch=32)
    # streamed (text per token) and not streamed (text once at the end) sequences
    pairs = [_seq(gen, p, m, stream=i % 2 == 0) for i, (p, m) in enumerate(zip(prompts, max_tokens, strict=True))]
    pairs.append(_seq(gen, prompts[4], max_tokens[4]))  # the same prompt twice (as n > 1): one prefill row
    pairs.append(_seq(gen, prompts[6], 30, cancelled=True))  # cancelled while queued: never prefilled
    engine.submit([s for s, _ in pairs])  # all waiting before the loop starts: they join in one step
    engine.start()
    try:
        for _, col in pairs:
            assert col.done.wait(120)
        _wait_idle(engine)
    finally:
        engine.stop()
    got = [col.text for _, col in pairs]
    assert got[:10] == refs
    assert got[10] == refs[4]
    assert pairs[11][1].finish == "cancelled" and got[11] == ""
    # several prompts per prefill forward (10 distinct prompts, fewer forwards), rows of different lengths
    assert engine.peak_prefill_group >= 3 and engine.prefill_forwards < 10
    # no leaked slot: the batch and its KV cache are gone once every sequence has ended
    assert (engine.running, engine.queue_depth, engine.cache_width) == (0, 0, 0)
    assert engine._cache is None


def test_a_longer_group_joins_a_running_batch(gen: Generator) -> None:
    """Short prompts decode; longer ones arrive together mid-way (the batch is padded on the left to them)."""
    prompts = _prompts()
    first, later = prompts[:3], prompts[7:]
    cfgs = [20, 20, 20], [7, 9, 5]
    refs = [gen.complete([p], GenerationConfig(max_new_tokens=m))[0][0]
            for p, m in zip(first + later, cfgs[0] + cfgs[1], strict=True)]
    engine = Engine(gen.model, gen.tokenizer, "cpu", max_batch=32)
    a = [_seq(gen, p, m) for p, m in zip(first, cfgs[0], strict=True)]
    b = [_seq(gen, p, m) for p, m in zip(later, cfgs[1], strict=True)]
    steps: list[int] = []
    decode = engine._decode_step

    def counted() -> None:  # let the second wave in after a few decode steps of the first
        steps.append(len(engine._running))
        if len(steps) == 3:
            engine.submit([s for s, _ in b])
        decode()

    engine._decode_step = counted  # type: ignore[method-assign]
    engine.submit([s for s, _ in a])
    engine.start()
    try:
        for _, col in a + b:
            assert col.done.wait(120)
        _wait_idle(engine)
    finally:
        engine.stop()
    assert [col.text for _, col in a + b] == refs
    assert max(steps) == 6  # both waves were decoded in one batch
    assert (engine.running, engine.cache_width) == (0, 0)


def test_batched_prefill_rows_equal_lone_prefills(gen: Generator) -> None:
    """The numerics under the greedy equality: each row of a left-padded group prefill has the logits and the
    K/V of its prompt prefilled alone (fp32 GEMMs of another shape: equal to ~1e-5, not bit for bit), and its
    padding columns hold zeros."""
    import torch

    engine = Engine(gen.model, gen.tokenizer, "cpu")
    seqs = [_seq(gen, p, 4)[0] for p in _prompts()[2:7]]
    with torch.inference_mode():
        cache, mask, logits = engine._prefill(seqs)
        width = mask.shape[1]
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            assert mask[i].tolist() == [0] * (width - n) + [1] * n
            alone, _, ref = engine._prefill([s])
            torch.testing.assert_close(logits[i], ref[0], atol=1e-5, rtol=1e-5)
            assert int(logits[i].argmax()) == int(ref[0].argmax())
            for big, one in zip(cache.layers, alone.layers, strict=True):
                torch.testing.assert_close(big.keys[i, :, width - n:], one.keys[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(big.values[i, :, width - n:], one.values[0], atol=1e-5, rtol=1e-5)
                assert not big.keys[i, :, : width - n].any() and not big.values[i, :, : width - n].any()


def test_prefill_groups_bound_padding(gen: Generator) -> None:
    engine = Engine(gen.model, gen.tokenizer, "cpu", prefill_group_tokens=64)

    def users(*lens: int) -> list[list[Sequence]]:
        return [[Sequence(list(range(1, n + 1)), SamplingParams(), lambda ev: None)] for n in lens]

    groups = engine._groups(users(40, 4, 5, 6, 9, 30, 33))
    sizes = [[len(u[0].prompt_ids) for u in g] for g in groups]
    assert sizes == [[4, 5, 6], [9], [30], [33], [40]]
    for g in sizes:  # padding within the bound, padded tokens within the group budget (or one prompt alone)
        assert max(g) * len(g) <= PAD_WASTE * sum(g) and (len(g) == 1 or max(g) * len(g) <= 64)
    logp = Sequence([1, 2, 3], SamplingParams(logprobs=1), lambda ev: None, prompt_logprobs=True)
    assert [len(g) for g in engine._groups([[logp], *users(3, 3)])] == [1, 2]  # prompt logprobs: alone
