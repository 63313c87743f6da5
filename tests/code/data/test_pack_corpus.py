"""Packing: exact reconstruction of every file from the shards, splits by repo, determinism, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from domainfm.cli import main
from domainfm.code.data.fim import Special, parse_sample
from domainfm.code.data.pack import pack_corpus
from domainfm.code.data.shards import PackedDataset, read_index
from domainfm.code.tokenizer import STARCODER2_SPECIAL_TOKENS
from domainfm.core.errors import UserError
from domainfm.core.io import read_parquet_rows

SEQ = 64


@pytest.fixture(scope="module")
def packed(pack_corpus_dir: Path, pack_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "p"
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=SEQ, seed=3, val_fraction=0.25, shard_mb=0.01)
    return out


@pytest.fixture(scope="module")
def plain(pack_corpus_dir: Path, pack_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pack without FIM: the token stream, cut into rows, nothing lost."""
    out = tmp_path_factory.mktemp("plain") / "p"
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=SEQ, seed=3, val_fraction=0.25, shard_mb=0.01,
                fim_rate=0.0)
    return out


def _files(d: Path) -> dict[str, bytes]:
    """The outputs (shards + index), not the bookkeeping under _work/ (markers hold timings)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.relative_to(d).parts[0] != "_work"}


def _samples(packed: Path, split: str, tok_dir: Path) -> list[list]:
    """Token shards -> samples as pieces (special ids -> Special, text runs decoded)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    specials = {tok.token_to_id(t): t for t in STARCODER2_SPECIAL_TOKENS}
    idx = read_index(packed)
    samples, cur, run = [], [], []
    for sh in idx["splits"][split]["shards"]:
        ids = np.fromfile(packed / sh["file"], dtype=idx["dtype"]).tolist()
        ids = [t for t in ids if t != idx["pad_id"]]  # padding only ends a shard
        for t in ids:
            if t in specials:
                if run:
                    cur.append(tok.decode(run, skip_special_tokens=False))
                    run = []
                cur.append(Special(specials[t]))
                if specials[t] == "<|endoftext|>":
                    samples.append(cur)
                    cur = []
            else:
                run.append(t)
        assert not run and not cur  # every shard ends on a whole sample
    return samples


def test_every_file_comes_back_exactly(plain: Path, pack_corpus_dir: Path, pack_tokenizer: Path) -> None:
    """Without FIM (fim_rate 0) nothing is cut or padded inside a shard: every file comes back."""
    rows = list(read_parquet_rows(sorted((pack_corpus_dir / "data").glob("*.parquet"))))
    by_repo: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        by_repo.setdefault(r["repo_name"], []).append((r["path"], r["content"]))
    idx = read_index(plain)
    assert idx["splits"]["train"]["n_truncated_tokens"] == 0
    seen = []
    for split in ("train", "val"):
        samples = _samples(plain, split, pack_tokenizer)
        assert len(samples) == idx["splits"][split]["n_repos"]
        for pieces, repo in zip(samples, idx["splits"][split]["repos"], strict=True):
            name, files = parse_sample(pieces)
            if name is None:
                assert sorted(c for _, c in files) == sorted(c for _, c in by_repo[repo])
            else:
                assert name == repo and sorted(files) == sorted(by_repo[repo])
            seen.append(repo)
    assert sorted(seen) == sorted(by_repo)


def test_index_and_reader(packed: Path) -> None:
    idx = read_index(packed)
    assert idx["seq_len"] == SEQ and idx["dtype"] == "uint16" and idx["vocab_size"] == 500
    assert idx["seed"] == 3 and idx["fim_rate"] == 0.5 and Path(idx["tokenizer"]).is_dir()
    train, val = idx["splits"]["train"], idx["splits"]["val"]
    assert not set(train["repos"]) & set(val["repos"])  # held out by repository
    n_repos = len(train["repos"]) + len(val["repos"])
    assert n_repos >= 6 and len(val["repos"]) == round(0.25 * n_repos)
    assert len(train["shards"]) > 1  # small shard_mb -> several work units
    assert train["fim_psm"] + train["fim_spm"] > 0 and train["n_files"] + val["n_files"] == idx["corpus_rows"]
    assert idx["format"] == "domainfm-packed-v2" and idx["fim_fragment_rate"] == 0.5
    ds = PackedDataset(packed, "train")
    assert len(ds) == train["n_seqs"] and ds[0].shape == (SEQ,) and ds[0].dtype == np.int64
    assert train["n_tokens"] + train["n_pad_tokens"] == train["n_seqs"] * SEQ
    assert ds.pad_id == idx["pad_id"] == 4  # <fim_pad>
    assert int((np.stack([ds[i] for i in range(len(ds))]) == ds.pad_id).sum()) == train["n_pad_tokens"]


def test_literal_special_token_text_stays_text(plain: Path, pack_tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pack_tokenizer / "tokenizer.json"))
    idx = read_index(plain)
    ids = np.concatenate([np.fromfile(plain / s["file"], dtype=idx["dtype"])
                          for sp in idx["splits"].values() for s in sp["shards"]])
    n_repos = sum(sp["n_repos"] for sp in idx["splits"].values())
    n_files = sum(sp["n_files"] for sp in idx["splits"].values())
    assert int((ids == tok.token_to_id("<|endoftext|>")).sum()) == n_repos  # one per sample, none from text
    assert int((ids == tok.token_to_id("<file_sep>")).sum()) == n_files
    assert int((ids == tok.token_to_id("<NAME>")).sum()) >= 1  # PII placeholder: one token


def test_deterministic_for_a_seed_and_any_workers(packed: Path, pack_corpus_dir: Path, pack_tokenizer: Path,
                                                  tmp_path: Path) -> None:
    pack_corpus(pack_corpus_dir, pack_tokenizer, tmp_path / "again", seq_len=SEQ, seed=3, val_fraction=0.25,
                shard_mb=0.01, workers=2)
    assert _files(tmp_path / "again") == _files(packed)
    pack_corpus(pack_corpus_dir, pack_tokenizer, tmp_path / "other", seq_len=SEQ, seed=4, val_fraction=0.25,
                shard_mb=0.01)
    a = _files(tmp_path / "other")
    assert a["train/00000.bin"] != _files(packed)["train/00000.bin"]


def test_resume_after_a_crash_gives_the_same_bytes(packed: Path, pack_corpus_dir: Path, pack_tokenizer: Path,
                                                   tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "p"
    shutil.copytree(packed, out)
    # the state a kill -9 leaves: no index, one shard finished but unmarked, one missing, a temp file
    (out / "index.json").unlink()
    (out / "_work" / "completions" / "00001.json").unlink()
    (out / "_work" / "completions" / "00002.json").unlink()
    (out / "train" / "00002.bin").unlink()
    (out / "train" / ".00002.bin.x.tmp").write_bytes(b"partial")
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=SEQ, seed=3, val_fraction=0.25, shard_mb=0.01)
    (out / "train" / ".00002.bin.x.tmp").unlink()
    assert _files(out) == _files(packed)


def test_refuses_other_settings_in_the_same_folder(packed: Path, pack_corpus_dir: Path, pack_tokenizer: Path) -> None:
    with pytest.raises(UserError, match="other settings"):
        pack_corpus(pack_corpus_dir, pack_tokenizer, packed, seq_len=SEQ * 2, seed=3, val_fraction=0.25,
                    shard_mb=0.01)
    with pytest.raises(UserError, match="fim-rate"):
        pack_corpus(pack_corpus_dir, pack_tokenizer, packed.parent / "x", seq_len=SEQ, fim_rate=1.5)
    with pytest.raises(UserError, match="tokenizer.json"):
        pack_corpus(pack_corpus_dir, packed, packed.parent / "y", seq_len=SEQ)


def test_cli(pack_corpus_dir: Path, pack_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p"
    args = ["code", "pack", str(pack_corpus_dir), "--tokenizer", str(pack_tokenizer), "-o", str(out),
            "--seq-len", "128", "--fim-rate", "0.5", "--seed", "1", "--val-fraction", "0.2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "train" in text and "val" in text and "padding" in text and "tokens/s" in text
    idx = json.loads((out / "index.json").read_text())
    assert idx["seq_len"] == 128 and idx["splits"]["val"]["n_repos"] >= 1
    assert main(args) == 0  # a finished pack: returns at once, same index
    assert json.loads((out / "index.json").read_text()) == idx
    assert main(["code", "pack", str(tmp_path / "missing"), "--tokenizer", str(pack_tokenizer), "-o",
                 str(tmp_path / "q"), "--seq-len", "8"]) == 2


def test_structured_notebooks_are_documents_with_their_tokens(pack_tokenizer: Path, tmp_path: Path) -> None:
    """Before: every record was a file of its repository sample and `<jupyter_start>` & co. were tokenised
    as text (several tokens each), so the model never saw StarCoder2's notebook tokens."""
    import nbformat
    from tokenizers import Tokenizer

    from domainfm.code.curate.notebooks import convert
    from domainfm.code.data.testing import stdlib_rows, write_corpus

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                  "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# Load the data"),
                nbformat.v4.new_code_cell("import json\nrows = json.loads('[1, 2]')\nrows",
                                          outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "[1, 2]"},
                                                                          execution_count=1)]),
                nbformat.v4.new_markdown_cell("Sum them"), nbformat.v4.new_code_cell("sum(rows)")]
    structured = convert(nbformat.writes(nb)).structured
    assert structured and structured.startswith("<jupyter_start>")
    rows = [{**r, "kind": "file"} for r in stdlib_rows(n_repos=2, files_per_repo=2, max_file_bytes=4000)]
    repo = rows[0]["repo_name"]
    rows.append({**rows[0], "path": "notebooks/load.ipynb", "kind": "notebook_structured", "content": structured,
                 "language": "Jupyter Notebook", "size": len(structured)})
    rows.append({**rows[0], "path": "doc.py", "kind": "file", "content": "S = '<jupyter_start><jupyter_code>'\n"})
    corpus = write_corpus(tmp_path / "c", rows, n_shards=1)
    out = tmp_path / "p"
    pack_corpus(corpus, pack_tokenizer, out, seq_len=SEQ, seed=0, val_fraction=0.0, fim_rate=0.0)
    idx = read_index(out)
    tok = Tokenizer.from_file(str(pack_tokenizer / "tokenizer.json"))
    ids = np.fromfile(out / idx["splits"]["train"]["shards"][0]["file"], dtype=idx["dtype"])
    count = {t: int((ids == tok.token_to_id(t)).sum()) for t in
             ("<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<|endoftext|>")}
    assert count == {"<jupyter_start>": 1, "<jupyter_text>": 2, "<jupyter_code>": 2, "<jupyter_output>": 2,
                     "<|endoftext|>": idx["splits"]["train"]["n_repos"] + 1}  # the notebook: its own sample
    sp = idx["splits"]["train"]
    assert sp["n_docs_notebook_structured"] == 1 and sp["n_files"] == len(rows) and repo in sp["repos"]
