"""encode -> decode gives back the exact text, for arbitrary text and arbitrary slices of real source."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
CODE_ALPHABET = st.sampled_from(list(" \t\n\r\x00\x0b\x0c{}()[]<>|_=+-*/#'\"\\0123456789abcXYZé中😀\u200b\ufeff"))


@pytest.fixture(scope="module")
def tokenizers(trained_tokenizer: Path):  # noqa: ANN201
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(trained_tokenizer), Tokenizer.from_file(str(trained_tokenizer / "tokenizer.json"))


def _check(tokenizers, text: str) -> None:  # noqa: ANN001
    hf, raw = tokenizers
    ids = hf(text, add_special_tokens=False).input_ids
    assert hf.decode(ids) == text
    assert raw.decode(raw.encode(text).ids, skip_special_tokens=False) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_roundtrip_arbitrary_unicode(tokenizers, text: str) -> None:  # noqa: ANN001
    _check(tokenizers, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(CODE_ALPHABET, max_size=200))
def test_roundtrip_code_like_text(tokenizers, text: str) -> None:  # noqa: ANN001
    _check(tokenizers, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_roundtrip_arbitrary_bytes_as_latin1(tokenizers, data: bytes) -> None:  # noqa: ANN001
    # any byte string, read the way a decoder of last resort would (one char per byte)
    _check(tokenizers, data.decode("latin-1"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(SOURCE)), st.integers(0, 2000))
def test_roundtrip_slices_of_real_source(tokenizers, start: int, n: int) -> None:  # noqa: ANN001
    _check(tokenizers, SOURCE[start:start + n])


def test_roundtrip_special_token_lookalikes(tokenizers) -> None:  # noqa: ANN001
    _check(tokenizers, "x = '<|endoftext|>' + '<fim_prefix>' # <NAME> <file_sep>\n<fim_pad")
