from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.data.testing import make_stdlib_corpus

    return make_stdlib_corpus(tmp_path_factory.mktemp("corpus"), n_repos=6, files_per_repo=5)


@pytest.fixture(scope="session")
def trained_tokenizer(stdlib_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.tokenizer import train_tokenizer

    return train_tokenizer(stdlib_corpus, tmp_path_factory.mktemp("tok") / "tok", vocab_size=600)
