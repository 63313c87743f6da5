"""Bad input is answered in OpenAI's error shape with the right status, never a 500: 400 naming the field,
404 unknown model, 413 oversized body, 429 + Retry-After on a full queue, 503 while loading."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

try:  # the HTTP client the installed `openai` package is built on
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

OK = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 2}


def _post(live: Any, body: Any = None, raw: bytes | None = None, **kw: Any) -> Any:
    if raw is not None:
        return httpx.post(live.url + "/v1/completions", content=raw,
                          headers={"content-type": "application/json"}, **kw)
    return httpx.post(live.url + "/v1/completions", json=body, **kw)


def _error(resp: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(("change", "param", "words"), [
    ({"bogus": 1}, "bogus", "Unrecognized request argument"),
    ({"max_tokens": 10 ** 9}, "max_tokens", "limit"),
    ({"max_tokens": -1}, "max_tokens", "greater than or equal"),
    ({"n": 10 ** 6}, "n", "less than or equal"),
    ({"temperature": 3}, "temperature", ""),
    ({"top_p": 0}, "top_p", ""),
    ({"prompt": {"a": 1}}, "prompt", ""),
    ({"prompt": []}, "prompt", "empty"),
    ({"prompt": [1, 2, 10 ** 6]}, "prompt", "vocabulary"),
    ({"prompt": "x " * 400}, "prompt", "context"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"logprobs": 9}, "logprobs", ""),
    ({"frequency_penalty": 1.0}, "frequency_penalty", "less than or equal to 0"),
    ({"logit_bias": {"5": 1.0}}, "logit_bias", ""),
    ({"stop": "x" * 300}, "stop", "at most 256"),
    ({"suffix": "x", "echo": True}, "echo", ""),
    ({"model": 7}, "model", ""),
])
def test_malformed_fields_are_400_naming_the_field(live: Any, change: dict, param: str, words: str) -> None:
    err = _error(_post(live, {**OK, **change}), 400, param)
    assert words in err["message"]


def test_missing_field_and_bad_bodies(live: Any) -> None:
    _error(_post(live, {"model": "tiny"}), 400, "prompt")
    assert _post(live, {"prompt": "x", "max_tokens": 1}).status_code == 200  # one model served: `model` optional
    _error(_post(live, raw=b'{"model": "tiny", "prompt": "\xff\xfe"}'), 400)  # invalid UTF-8 in JSON
    _error(_post(live, raw=b'{"model": "tiny", "prompt": '), 400)  # truncated JSON
    _error(_post(live, raw=b"[1, 2]"), 400)
    _error(_post(live, raw=b""), 400)


def test_unknown_model_is_404(live: Any) -> None:
    err = _error(_post(live, {**OK, "model": "gpt-4"}), 404, "model")
    assert err["code"] == "model_not_found"


def test_oversized_body_is_413(live: Any) -> None:
    big = b'{"model": "tiny", "prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    _error(_post(live, raw=big), 413)

    def chunks():  # no Content-Length: counted while streaming in
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    resp = httpx.post(live.url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    _error(resp, 413)


def test_max_tokens_zero_echo_and_empty_prompt(live: Any) -> None:
    r = _post(live, {**OK, "max_tokens": 0, "echo": True})
    assert r.status_code == 200
    c = r.json()["choices"][0]
    assert c["text"] == OK["prompt"] and c["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 0
    assert _post(live, {**OK, "prompt": ""}).status_code == 200


def test_full_queue_is_429_with_retry_after(endless_model: Path, live_server: Any) -> None:
    with live_server(endless_model, max_batch=1, max_queue=2) as srv:
        long = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 240, "temperature": 0, "n": 2}
        first: dict[str, Any] = {}
        t = threading.Thread(target=lambda: first.update(r=_post(srv, long, timeout=120)))
        t.start()
        while srv.state.engine.running == 0:  # one sequence runs, its sibling waits
            time.sleep(0.005)
        resp = _post(srv, long)  # 1 waiting + 2 more > max_queue 2
        err = _error(resp, 429)
        assert resp.headers["retry-after"] == "1" and err["type"] == "rate_limit_error"
        _error(_post(srv, {**long, "n": 3}), 400, "n")  # could never fit: 400, not 429
        t.join()
        assert first["r"].status_code == 200
        assert [c["text"] for c in first["r"].json()["choices"]] == ["a" * 240] * 2


def test_loading_is_503(serve_model: Path) -> None:
    from domainfm.code.serve.app import ServeConfig, create_app

    app = create_app(ServeConfig(model_dir=serve_model))  # lifespan not run: the model is not loaded

    async def go() -> tuple[Any, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/health"), await c.post("/v1/completions", json=OK)

    health, comp = asyncio.run(go())
    assert _error(health, 503)["message"] == "the model is loading"
    _error(comp, 503)
    assert comp.headers["retry-after"] == "5"
