"""FIM per training row (Megatron-LM / StarCoder2), checked on the rows of real packed shards.

Every row of every shard is decoded and read against the FIM grammar: split at `<|endoftext|>` and
`<file_sep>`, each fragment is either plain text or exactly one PSM / SPM frame; padding only ends a
row; and undoing the FIM gives back the text of the same row packed without FIM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domainfm.code.data.fim import render, repo_sample
from domainfm.code.data.pack import pack_corpus
from domainfm.code.data.shards import read_index
from domainfm.core.io import read_parquet_rows

# the StarCoder2 paper (Lozhkov et al. 2024, arXiv:2402.19173, section 5.2 "Repository context"):
# with FIM, a repository sample reads
#   <repo_name>reponame<file_sep><fim_prefix>filepath0\ncode0_pre<fim_suffix>code0_suf<fim_middle>code0_mid
#   <file_sep><fim_prefix>filepath1\ncode1_pre<fim_suffix>code1_suf<fim_middle>code1_mid ... <|endoftext|>
# i.e. the path heads the prefix, after <fim_prefix>.
PAPER_PSM = ("<repo_name>{repo}<file_sep><fim_prefix>{path}\n{pre}<fim_suffix>{suf}<fim_middle>{mid}"
             "<|endoftext|>")


class Toks:
    def __init__(self, tok_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        self.tok.encode_special_tokens = True
        tid = self.tok.token_to_id
        self.eos, self.sep, self.pad = tid("<|endoftext|>"), tid("<file_sep>"), tid("<fim_pad>")
        self.pre, self.suf, self.mid = tid("<fim_prefix>"), tid("<fim_suffix>"), tid("<fim_middle>")
        self.repo = tid("<repo_name>")

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []


def _fragments(row: list[int], t: Toks) -> list[tuple[list[int], int | None]]:
    """Row -> [(fragment ids, the separator after it or None)]; asserts that pads only end the row."""
    n = len(row)
    while n and row[n - 1] == t.pad:
        n -= 1
    assert t.pad not in row[:n], "padding inside a row"
    frags, cur = [], []
    for x in row[:n]:
        if x in (t.eos, t.sep):
            frags.append((cur, x))
            cur = []
        else:
            cur.append(x)
    frags.append((cur, None))
    return frags


def _parse(frag: list[int], t: Toks) -> tuple[str, list[int], list[int], list[int]] | None:
    """None for plain text; else (layout, A, B, C) of <fim_prefix>A<fim_suffix>B<fim_middle>C (grammar checked)."""
    marks = [i for i, x in enumerate(frag) if x in (t.pre, t.suf, t.mid)]
    if not marks:
        return None
    assert [frag[i] for i in marks] == [t.pre, t.suf, t.mid] and marks[0] == 0, \
        f"FIM part without the others, or out of order: {[frag[i] for i in marks]}"
    i, j, k = marks
    return ("spm" if j == 1 else "psm"), frag[i + 1:j], frag[j + 1:k], frag[k + 1:]


def _rows(packed: Path) -> list[list[int]]:
    idx = read_index(packed)
    out = []
    for sp in idx["splits"].values():
        for sh in sp["shards"]:
            a = np.fromfile(packed / sh["file"], dtype=idx["dtype"]).reshape(-1, idx["seq_len"])
            out.extend(a.tolist())
    return out


def check_pack(fim: Path, plain: Path, t: Toks, paths: set[str]) -> dict[str, int]:
    """Decode every row of `fim` and check it against the FIM grammar and against `plain`."""
    # "spm" counts the SPM layout, which a PSM frame with an empty prefix shares
    counts = {"psm": 0, "spm": 0, "spm_split_inside_a_token": 0, "with_path": 0}
    rows, ref = _rows(fim), _rows(plain)
    assert len(rows) == len(ref) and all(len(r) == read_index(fim)["seq_len"] for r in rows)
    for row, base in zip(rows, ref, strict=True):
        frags, base_frags = _fragments(row, t), _fragments(base, t)
        assert len(frags) <= len(base_frags)  # FIM never adds a separator; the cut may drop the last ones
        meta: bool | None = None  # does the current sample carry paths? unknown where a row starts mid-sample
        before: int | None = None  # the separator in front of this fragment
        for (ids, after), (bids, _) in zip(frags, base_frags, strict=False):
            if before == t.eos or (before is None and ids[:1] == [t.repo]):
                meta = ids[:1] == [t.repo]
            got = _parse(ids, t)
            if got is None:  # plain: the same ids as without FIM (a prefix of them where the row was cut)
                assert ids == bids if after is not None else bids[:len(ids)] == ids
            else:
                mode, a, b, c = got
                counts[mode] += 1
                if mode == "psm":
                    pre, suf, mid = t.text(a), t.text(b), t.text(c)
                    whole = pre + mid + suf
                else:
                    assert not a
                    suf, pm = t.text(b), t.text(c)
                    whole = pm + suf
                    if after is not None:  # SPM: prefix and middle tokenised apart (some cut gives these ids)
                        assert any(t.enc(t.text(c[:i])) == c[:i] and t.enc(t.text(c[i:])) == c[i:]
                                   for i in range(len(c) + 1)), "SPM prefix+middle is not two encoded pieces"
                        counts["spm_split_inside_a_token"] += c != t.enc(pm)
                if before == t.sep and meta:  # repository level: the path heads the prefix
                    lead = pre if mode == "psm" else pm
                    assert "\n" in lead or (mode == "spm" and after is None)  # (SPM: the cut may end in it)
                    if "\n" in lead:
                        assert lead.split("\n", 1)[0] in paths, lead[:80]
                        counts["with_path"] += 1
                if after is not None:  # a whole frame: undoing it gives back the text without FIM
                    assert whole == t.text(bids), (whole[:80], t.text(bids)[:80])
            before = after
    return counts


@pytest.fixture(scope="module")
def toks(pack_tokenizer: Path) -> Toks:
    return Toks(pack_tokenizer)


@pytest.fixture(scope="module")
def paths(pack_corpus_dir: Path) -> set[str]:
    return {r["path"] for r in read_parquet_rows(sorted((pack_corpus_dir / "data").glob("*.parquet")))}


@pytest.fixture(scope="module")
def plain_by_seq(pack_corpus_dir: Path, pack_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("plain_rows")
    out = {}
    for seq in (96, 256):
        out[seq] = base / str(seq)
        pack_corpus(pack_corpus_dir, pack_tokenizer, out[seq], seq_len=seq, seed=1, val_fraction=0.2,
                    shard_mb=0.02, fim_rate=0.0, repo_meta_rate=0.8)
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.sampled_from([96, 256]), fim_rate=st.sampled_from([0.5, 1.0]),
       fragment_rate=st.sampled_from([0.5, 1.0]), spm_rate=st.sampled_from([0.0, 0.5, 1.0]))
def test_every_row_of_real_shards_follows_the_fim_grammar(
        seq: int, fim_rate: float, fragment_rate: float, spm_rate: float, pack_corpus_dir: Path,
        pack_tokenizer: Path, plain_by_seq: dict[int, Path], toks: Toks, paths: set[str],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("fimrows") / "p"
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=seq, seed=1, val_fraction=0.2, shard_mb=0.02,
                fim_rate=fim_rate, fim_fragment_rate=fragment_rate, fim_spm_rate=spm_rate, repo_meta_rate=0.8)
    counts = check_pack(out, plain_by_seq[seq], toks, paths)
    idx = read_index(out)
    n_psm = sum(sp["fim_psm"] for sp in idx["splits"].values())
    n_spm = sum(sp["fim_spm"] for sp in idx["splits"].values())
    assert counts["psm"] + counts["spm"] == n_psm + n_spm > 0  # the index counts what the rows hold
    assert counts["psm"] <= n_psm and counts["spm"] >= n_spm  # (an empty PSM prefix reads as SPM)
    if spm_rate == 1.0:
        assert counts["psm"] == 0
    if spm_rate == 0.0:
        assert n_spm == 0 and counts["spm"] * 10 < counts["psm"]
    if fim_rate == fragment_rate == 1.0:
        assert counts["with_path"] > 0  # repository-level FIM happened, with the path in the prefix
    for sp in idx["splits"].values():  # every slot accounted for
        assert sp["n_tokens"] + sp["n_pad_tokens"] == sp["n_seqs"] * seq


def test_spm_prefix_and_middle_are_tokenised_apart(pack_corpus_dir: Path, pack_tokenizer: Path,
                                                    plain_by_seq: dict[int, Path], toks: Toks, paths: set[str],
                                                    tmp_path: Path) -> None:
    """Before: SPM encoded PREFIX+MIDDLE as one text, so the split point was never a token boundary
    unless the tokenizer put one there; a prompt ending in PREFIX ends on PREFIX's own tokens."""
    out = tmp_path / "spm"
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=256, seed=1, val_fraction=0.2, shard_mb=0.02,
                fim_rate=1.0, fim_fragment_rate=1.0, fim_spm_rate=1.0,
                repo_meta_rate=0.8)
    counts = check_pack(out, plain_by_seq[256], toks, paths)
    assert counts["spm"] > 20 and counts["psm"] == 0
    assert counts["spm_split_inside_a_token"] > 0  # the one-piece encoding would differ there


def test_long_files_leave_no_row_with_a_fim_part_alone(pack_corpus_dir: Path, pack_tokenizer: Path,
                                                      toks: Toks, tmp_path: Path) -> None:
    """Before: FIM per file, then the stream was cut into rows, so a file longer than a row left rows
    holding `<fim_suffix>...<fim_middle>...` without their `<fim_prefix>`."""
    out = tmp_path / "short_rows"
    pack_corpus(pack_corpus_dir, pack_tokenizer, out, seq_len=48, seed=2, val_fraction=0.0, shard_mb=1.0,
                fim_rate=1.0, fim_fragment_rate=1.0)
    n_fim = 0
    for row in _rows(out):
        for ids, _ in _fragments(row, toks):
            n_fim += _parse(ids, toks) is not None  # asserts the grammar
    idx = read_index(out)
    assert n_fim > 100 and idx["splits"]["train"]["n_truncated_tokens"] > 0
    assert idx["splits"]["train"]["fim_kept_plain"] > 0  # frames that the cut would have split


def test_repository_fim_puts_the_path_where_starcoder2_does() -> None:
    """Text level: the path heads the prefix, after <fim_prefix> (paper layout above), in PSM and SPM."""
    code = "import os\n\ndef main():\n    return os.getcwd()\n"
    for seed in range(30):
        pieces = repo_sample("reponame", [("filepath0", code)], seed=seed, fim_rate=1.0, spm_rate=0.0,
                             meta_rate=1.0)
        pre, suf, mid = pieces[4], pieces[6], pieces[8]
        assert pre.startswith("filepath0\n") and pre[len("filepath0\n"):] + mid + suf == code
        assert render(pieces) == PAPER_PSM.format(repo="reponame", path="filepath0", pre=pre[len("filepath0\n"):],
                                                  suf=suf, mid=mid)
        spm = render(repo_sample("reponame", [("filepath0", code)], seed=seed, fim_rate=1.0, spm_rate=1.0,
                                 meta_rate=1.0))
        assert spm.startswith("<repo_name>reponame<file_sep><fim_prefix><fim_suffix>")
        assert spm.split("<fim_middle>")[1].startswith("filepath0\n")
