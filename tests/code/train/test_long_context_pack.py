"""Packing for the long-context stage: `code pack --seq-len` at a longer length cuts the same StarCoder2
repository-context stream into longer rows, so whole repositories (`<repo_name>NAME<file_sep>PATH\\nCODE...
<|endoftext|>`, arXiv:2402.19173 section 5.1) fit in one training sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domainfm.code.data.fim import Special, parse_sample
from domainfm.code.data.pack import pack_corpus
from domainfm.code.data.shards import PackedDataset
from domainfm.code.tokenizer import STARCODER2_SPECIAL_TOKENS
from domainfm.core.io import read_parquet_rows

SHORT, LONG = 128, 4096


@pytest.fixture(scope="module")
def corpus_and_tok(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from domainfm.code.data.testing import stdlib_rows, write_corpus
    from domainfm.code.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("lc_pack")
    corpus = write_corpus(root / "corpus", stdlib_rows(n_repos=4, files_per_repo=4, max_file_bytes=5000))
    return corpus, train_tokenizer(corpus, root / "tok", vocab_size=500)


def _pack(corpus: Path, tok: Path, out: Path, seq_len: int, fim_rate: float) -> Path:
    # every repository carries its name and paths (StarCoder2 does so for half of them: --repo-meta-rate 0.5)
    pack_corpus(corpus, tok, out, seq_len=seq_len, seed=5, val_fraction=0.0, fim_rate=fim_rate, repo_meta_rate=1.0)
    return out


def _pieces(ids: list[int], tok: object) -> list:
    """Token ids -> pieces: special tokens as `Special`, the text between them decoded."""
    specials = {tok.token_to_id(t): t for t in STARCODER2_SPECIAL_TOKENS if tok.token_to_id(t) is not None}
    out, run = [], []
    for t in ids:
        if t in specials:
            if run:
                out.append(tok.decode(run, skip_special_tokens=False))
                run = []
            out.append(Special(specials[t]))
        else:
            run.append(t)
    if run:
        out.append(tok.decode(run, skip_special_tokens=False))
    return out


def _whole_samples(ds: PackedDataset, eos: int, repo_name: int) -> int:
    """Rows holding a whole repository sample (from <repo_name> to <|endoftext|>)."""
    n = 0
    for i in range(len(ds)):
        row = ds[i].tolist()
        starts = [k for k, t in enumerate(row) if t == repo_name]
        n += any(eos in row[s:] for s in starts)
    return n


def test_longer_rows_hold_whole_repositories_in_the_starcoder2_format(corpus_and_tok: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    corpus, tok_dir = corpus_and_tok
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    short = PackedDataset(_pack(corpus, tok_dir, tmp_path / "short", SHORT, 0.0))
    long = PackedDataset(_pack(corpus, tok_dir, tmp_path / "long", LONG, 0.0))
    assert long.seq_len == LONG and short.seq_len == SHORT
    pad, eos, repo_tok = (tok.token_to_id(t) for t in ("<fim_pad>", "<|endoftext|>", "<repo_name>"))

    # the same token stream, cut into longer rows (padding only ends the shard)
    s = np.concatenate([short[i] for i in range(len(short))])
    ln = np.concatenate([long[i] for i in range(len(long))])
    assert np.array_equal(s[s != pad], ln[ln != pad])
    n_stream = int((s != pad).sum())
    assert len(long) == -(-n_stream // LONG) and len(short) == -(-n_stream // SHORT)

    # whole repositories fit in one long row, none in a short one
    assert _whole_samples(short, eos, repo_tok) == 0
    assert _whole_samples(long, eos, repo_tok) >= 2

    # the first long row starts with a repository in StarCoder2's format, files exactly as curated
    by_repo: dict[str, set] = {}
    for r in read_parquet_rows(sorted((corpus / "data").glob("*.parquet"))):
        by_repo.setdefault(r["repo_name"], set()).add((r["path"], r["content"]))
    pieces = _pieces(long[0].tolist(), tok)
    assert pieces[0] == Special("<repo_name>") and pieces[2] == Special("<file_sep>")
    first = pieces[: pieces.index(Special("<|endoftext|>")) + 1]
    name, files = parse_sample(first)
    assert len(files) >= 2 and set(files) == by_repo[name]


def test_repository_level_fim_at_the_longer_length(corpus_and_tok: tuple[Path, Path], tmp_path: Path) -> None:
    """FIM per row as StarCoder2 (section 5.1): `<file_sep><fim_prefix>PATH\\nCODE_PRE<fim_suffix>...<fim_middle>`,
    the path at the head of the prefix, in rows of the long length."""
    from tokenizers import Tokenizer

    corpus, tok_dir = corpus_and_tok
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    ds = PackedDataset(_pack(corpus, tok_dir, tmp_path / "fim", LONG, 1.0))
    paths = {r["path"] for r in read_parquet_rows(sorted((corpus / "data").glob("*.parquet")))}
    found = 0
    for i in range(len(ds)):
        p = _pieces(ds[i].tolist(), tok)
        for k in range(len(p) - 2):
            if p[k] == Special("<file_sep>") and p[k + 1] == Special("<fim_prefix>") and isinstance(p[k + 2], str):
                assert p[k + 2].split("\n", 1)[0] in paths  # the file's path heads its prefix
                rest = p[k + 3:]
                assert Special("<fim_suffix>") in rest and Special("<fim_middle>") in rest
                found += 1
    assert found >= 2
