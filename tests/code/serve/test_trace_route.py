"""POST /v1/trace and `"trace": true` on completions: the `code trace --json` answer, through the server."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # the openai client's HTTP library (httpx2 in recent releases)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx


@pytest.fixture(scope="module")
def trace_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    from domainfm.code.attribution.index import build_index
    from domainfm.code.data.testing import make_stdlib_corpus
    from domainfm.core.io import read_parquet_rows

    corpus = make_stdlib_corpus(tmp_path_factory.mktemp("trace_corpus"), n_repos=2, files_per_repo=3)
    index = tmp_path_factory.mktemp("trace_index") / "index"
    build_index(corpus, index)
    return index, list(read_parquet_rows(sorted((corpus / "data").glob("*.parquet"))))


def test_trace_route_equals_the_cli_answer(serve_model: Path, live_server, trace_index) -> None:
    from domainfm.code.attribution.trace import Tracer

    index, rows = trace_index
    row = max(rows, key=lambda r: len(r["content"]))
    excerpt = "\n".join(row["content"].splitlines()[5:25])
    with live_server(serve_model, trace_index=index) as live:
        got = httpx.post(live.url + "/v1/trace", json={"snippet": excerpt, "top_k": 3}, timeout=60).json()
        assert got == Tracer(index).trace(excerpt, 3)
        assert got["membership"]["fraction"] == 1.0 and got["hits"][0]["swhid"] == row["swhid"]
        bad = httpx.post(live.url + "/v1/trace", json={"snippet": "x", "top_k": 0}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_k"
        # opt-in trace of each generated completion, through the official client
        client = live.client()
        resp = client.completions.create(model=live.state.model_name, prompt="def add(a, b):\n", max_tokens=8,
                                         temperature=0, n=2, extra_body={"trace": True, "trace_top_k": 2})
        for choice in resp.choices:
            trace = choice.model_extra["trace"]
            assert trace == Tracer(index).trace(choice.text, 2)
        streamed = httpx.post(live.url + "/v1/completions", json={"prompt": "x", "stream": True, "trace": True},
                              timeout=60)
        assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "trace"


def test_without_an_index_trace_is_a_404(live) -> None:
    r = httpx.post(live.url + "/v1/trace", json={"snippet": "def f(): pass"}, timeout=60)
    assert r.status_code == 404 and "--trace-index" in r.json()["error"]["message"]
    r = httpx.post(live.url + "/v1/completions", json={"prompt": "x", "trace": True}, timeout=60)
    assert r.status_code == 404
