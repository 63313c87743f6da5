"""Fixtures for the server tests: a tiny random StarCoder2 with our tokenizer (the generation tests' model
builder, reused), and a live server on a free loopback port, run by uvicorn in a thread of the test process."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _generate_conftest() -> Any:
    # the generation tests' model builder (`save_tiny_model`), loaded by path: conftests are not importable
    path = Path(__file__).parents[1] / "generate" / "conftest.py"
    spec = importlib.util.spec_from_file_location("domainfm_tests_generate_conftest", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generation tests' tiny 2-layer StarCoder2 (RoPE, GQA, vocab 400 trained on stdlib code)."""
    from domainfm.code.data.testing import make_stdlib_corpus
    from domainfm.code.tokenizer import train_tokenizer

    corpus = make_stdlib_corpus(tmp_path_factory.mktemp("serve_corpus"), n_repos=3, files_per_repo=3)
    tok = train_tokenizer(corpus, tmp_path_factory.mktemp("serve_tok") / "tok", vocab_size=400)
    return _generate_conftest().save_tiny_model(tmp_path_factory.mktemp("serve_model") / "tiny", tok)


@pytest.fixture(scope="session")
def endless_model(serve_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture and tokenizer, built to emit the token "a" at every step: it never stops early,
    so a request holds its batch slot for exactly max_tokens steps."""
    from transformers import AutoTokenizer

    a = AutoTokenizer.from_pretrained(serve_model).convert_tokens_to_ids("a")
    return _generate_conftest().save_tiny_model(tmp_path_factory.mktemp("endless") / "tiny", serve_model, always=a)


@dataclass
class Live:
    url: str  # http://127.0.0.1:PORT
    app: Any
    server: Any

    @property
    def state(self) -> Any:
        return self.app.state.serve

    def client(self, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, **kw)


@contextmanager
def live_server(model_dir: Path, **cfg: Any) -> Iterator[Live]:
    import uvicorn

    from domainfm.code.serve.app import ServeConfig, create_app

    app = create_app(ServeConfig(model_dir=model_dir, port=0, device="cpu", **cfg))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (server.started and app.state.serve.ready.is_set()):
        assert time.monotonic() < deadline and thread.is_alive(), app.state.serve.load_error
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session", name="live_server")
def live_server_fixture() -> Any:
    """`with live_server(model_dir, **ServeConfig fields) as live:` for a server with other settings."""
    return live_server


@pytest.fixture(scope="session")
def live(serve_model: Path) -> Iterator[Live]:
    """One server for the session's client / parity / load tests (max_batch 32, default queue)."""
    with live_server(serve_model, max_batch=32) as srv:
        yield srv
