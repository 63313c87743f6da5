"""The trained tokenizer: special-token layout, HF loading, StarCoder2 pre-tokenisation, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domainfm.cli import main
from domainfm.code.tokenizer import PII_TOKENS, SPECIAL_TOKENS, train_tokenizer
from domainfm.core.errors import UserError

ISSUE_ORDER = (
    "<|endoftext|> <fim_prefix> <fim_middle> <fim_suffix> <fim_pad> <repo_name> <file_sep> <issue_start> "
    "<issue_comment> <issue_closed> <jupyter_start> <jupyter_text> <jupyter_code> <jupyter_output> "
    "<jupyter_script> <empty_output> <code_to_intermediate> <intermediate_to_code> <pr> <pr_status> "
    "<pr_is_merged> <pr_base> <pr_file> <pr_base_code> <pr_diff> <pr_diff_hunk> <pr_comment> <pr_event_id> "
    "<pr_review> <pr_review_state> <pr_review_comment> <pr_in_reply_to_review_id> "
    "<pr_in_reply_to_comment_id> <pr_diff_hunk_comment_line> <NAME> <EMAIL> <KEY> <PASSWORD>"
).split()


def test_special_tokens_list_is_the_issue_order() -> None:
    assert SPECIAL_TOKENS == ISSUE_ORDER


def test_special_tokens_come_first_in_vocab(trained_tokenizer: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_tokenizer)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert len(tok) == 600
    assert tok.eos_token == tok.bos_token == tok.unk_token == tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id == 0
    cfg = json.loads((trained_tokenizer / "tokenizer_config.json").read_text())
    assert cfg["clean_up_tokenization_spaces"] is False
    assert (trained_tokenizer / "special_tokens_map.json").is_file()


def test_pre_tokenizer_splits_digits_and_keeps_specials_whole(trained_tokenizer: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_tokenizer)
    ids = tok("x = 123456", add_special_tokens=False).input_ids
    digits = [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]
    assert digits == list("123456")  # individual digits, never merged
    for t in PII_TOKENS + ["<fim_middle>", "<file_sep>"]:
        assert tok(f"a{t}b", add_special_tokens=False).input_ids[1] == tok.convert_tokens_to_ids(t)
    # PII placeholders are not "special": skip_special_tokens keeps them, drops structure tokens
    ids = tok("<NAME><file_sep>x", add_special_tokens=False).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "<NAME>x"


def test_learned_merges_compress_code(trained_tokenizer: Path, stdlib_corpus: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_tokenizer)
    text = "def __init__(self, *args, **kwargs):\n        return self\n"
    assert len(tok(text).input_ids) < len(text.encode()) / 2  # far fewer tokens than bytes


def test_max_bytes_reads_only_part_of_the_corpus(stdlib_corpus: Path, tmp_path: Path) -> None:
    out = train_tokenizer(stdlib_corpus, tmp_path / "t", vocab_size=400, max_bytes=10_000)
    st = json.loads((out / "training_stats.json").read_text())
    assert 10_000 <= st["bytes_read"] < 10_000 + 20_000
    assert st["files_read"] < 30


def test_errors(stdlib_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(stdlib_corpus, tmp_path / "t", vocab_size=100)
    with pytest.raises(UserError, match="not found"):
        train_tokenizer(tmp_path / "nope", tmp_path / "t", vocab_size=400)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no Parquet shards"):
        train_tokenizer(tmp_path / "empty", tmp_path / "t", vocab_size=400)


def test_cli_train_then_refuse_to_overwrite(stdlib_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tok"
    args = ["code", "tokenizer", "train", str(stdlib_corpus), "-o", str(out), "--vocab-size", "400",
            "--max-bytes", "50000"]
    assert main(args) == 0
    assert "vocab 400" in capsys.readouterr().out
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
