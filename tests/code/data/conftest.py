from __future__ import annotations

from pathlib import Path

import pytest

# literal special-token text inside source code must stay text (except the PII placeholders)
TRICKY = {"swhid": "swh:1:cnt:0", "repo_name": "demo/tricky", "path": "tok.py", "language": "Python",
          "license_type": "permissive", "licenses": ["MIT"], "size": 0,
          "content": "EOS = '<|endoftext|>'\nSEP = '<file_sep>'  # <fim_prefix> by <NAME>\nπ = 'ü😀'\n"}


@pytest.fixture(scope="session")
def pack_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.data.testing import stdlib_rows, write_corpus

    rows = stdlib_rows(n_repos=8, files_per_repo=4, max_file_bytes=8000) + [TRICKY]
    return write_corpus(tmp_path_factory.mktemp("corpus"), rows, n_shards=2, row_group_size=3)


@pytest.fixture(scope="session")
def pack_tokenizer(pack_corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from domainfm.code.tokenizer import train_tokenizer

    return train_tokenizer(pack_corpus_dir, tmp_path_factory.mktemp("tok") / "tok", vocab_size=500)
