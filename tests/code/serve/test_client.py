"""The official `openai` client against the server: suffix, stream=True, n>1, echo, logprobs, usage, models,
and the disconnect / metrics behaviour."""

from __future__ import annotations

import time
from typing import Any

try:  # the HTTP client the installed `openai` package is built on
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from domainfm.code.generate import GenerationConfig, Generator

PROMPT = "def fibonacci(n):\n    "


def test_models_and_health(live: Any) -> None:
    client = live.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(live.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"


def test_completion_shape_and_usage(live: Any) -> None:
    client = live.client()
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=7, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    (c,) = r.choices
    gen = Generator(live.state.cfg.model_dir)
    assert r.usage.prompt_tokens == len(gen.tokenizer(PROMPT).input_ids)
    assert 1 <= r.usage.completion_tokens <= 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert c.finish_reason == ("length" if r.usage.completion_tokens == 7 else "stop")


def test_suffix_is_fill_in_the_middle(live: Any) -> None:
    client = live.client()
    prefix, suffix = "def area(r):\n    return ", "\n\nprint(area(2))\n"
    r = client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=10, temperature=0)
    ref = Generator(live.state.cfg.model_dir).infill([prefix], [suffix], GenerationConfig(max_new_tokens=10))
    assert r.choices[0].text == ref[0][0]
    # the FIM prompt is <fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>: 3 tokens more than prefix + suffix
    gen = Generator(live.state.cfg.model_dir)
    n_text = len(gen.tokenizer(prefix, add_special_tokens=False).input_ids) + len(
        gen.tokenizer(suffix, add_special_tokens=False).input_ids)
    assert r.usage.prompt_tokens == n_text + 3


def test_stream_chunks_concatenate_to_the_answer_and_end_with_done(live: Any) -> None:
    client = live.client()
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    # raw SSE: the stream ends with the literal [DONE] event
    with httpx.stream("POST", live.url + "/v1/completions", json={"model": "tiny", "prompt": PROMPT,
                                                                  "max_tokens": 3, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in resp.iter_lines() if x]
    assert lines[-1] == "data: [DONE]"


def test_n_choices_and_prompt_lists(live: Any) -> None:
    client = live.client()
    r = client.completions.create(model="tiny", prompt=[PROMPT, "import os\n"], n=3, max_tokens=8,
                                  temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == list(range(6))
    assert len({c.text for c in r.choices[:3]}) > 1  # n samples of one prompt differ
    again = client.completions.create(model="tiny", prompt=[PROMPT, "import os\n"], n=3, max_tokens=8,
                                      temperature=1.0, seed=3)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # seeded: reproducible
    streamed = list(client.completions.create(model="tiny", prompt=PROMPT, n=2, max_tokens=5, temperature=0,
                                              stream=True))
    assert {c.choices[0].index for c in streamed} == {0, 1}


def test_echo_logprobs_and_stop(live: Any) -> None:
    client = live.client()
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text.startswith(PROMPT)
    lp = c.logprobs
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    n_prompt = r.usage.prompt_tokens
    assert n_prompt < len(lp.tokens) <= n_prompt + r.usage.completion_tokens
    assert "".join(lp.tokens[:n_prompt]) == PROMPT and lp.text_offset[n_prompt] == len(PROMPT)
    # OpenAI keys alternatives by their text: two byte tokens that decode alike share a key
    assert all(1 <= len(t) <= 2 for t in lp.top_logprobs[1:])
    # greedy: every generated token is the top-1 alternative
    for tok, top in zip(lp.tokens[n_prompt:], lp.top_logprobs[n_prompt:], strict=True):
        if "\ufffd" not in tok:
            assert max(top, key=top.get) == tok
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    if len(full) > 3:
        stop = full[2:4]
        cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0, stop=stop)
        assert cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_disconnect_frees_the_slot(endless_model: Any, live_server: Any) -> None:
    with live_server(endless_model) as srv:  # a model that never stops early: only the hang-up ends it
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 240, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as resp:
            it = resp.iter_lines()
            next(it)  # one chunk: the request is running
            assert srv.state.engine.running == 1
        deadline = time.monotonic() + 5
        while srv.state.engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.state.engine.running == 0 and srv.state.engine.cache_width == 0
        generated = srv.state.metrics.value("domainfm_generated_tokens_total")
        time.sleep(0.3)
        assert srv.state.metrics.value("domainfm_generated_tokens_total") == generated < 240


def test_metrics_are_prometheus_text(live: Any) -> None:
    live.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
    text = httpx.get(live.url + "/metrics").text
    for name in ("domainfm_queue_depth", "domainfm_running_batch_size", "domainfm_generated_tokens_total",
                 "domainfm_request_latency_seconds_bucket", 'domainfm_requests_total{status="200"}'):
        assert name in text
